"""gateway/cache/questions.py: what a text asks, with the new question forms folded onto the
kinds they ask and a request opening told from the question it opens."""

from __future__ import annotations

from gateway.cache.questions import request_frame_end
from gateway.cache.text_features import profile


def test_a_count_asked_as_a_noun_asks_how_many() -> None:
    assert profile("What is the number of moons of Jupiter?").question == "how many"
    assert profile("How many moons does Jupiter have?").question == "how many"
    assert profile("What is the amount of sugar in a Coke?").question == "how much"
    # a number that is not counted is no count: "the phone number of" asks what
    assert profile("What is the phone number of the embassy?").question == "what"


def test_heat_is_a_temperature_however_it_is_asked() -> None:
    assert profile("How hot is the surface of the Sun?").question == "how:temperature"
    assert profile("What is the temperature of the surface of the Sun?").question == \
        "how:temperature"


def test_what_makes_asks_why_and_may_ask_what() -> None:
    asked = profile("What makes the sky blue?")
    assert asked.question == "why" and "what" in asked.kinds


def test_a_request_opening_ends_where_its_question_starts() -> None:
    assert request_frame_end(profile("I would like to know what causes earthquakes").words) == 5
    assert request_frame_end(profile("Can you tell me who discovered gravity?").words) == 4
    # no question word after it: a request for a thing, not an opening
    assert request_frame_end(profile("Can you tell me a joke?").words) == 0
    assert request_frame_end(profile("What causes earthquakes?").words) == 0
    assert profile("Could you tell me how I reset my router?").persons == {"first"}
    assert profile("Could you tell me who wrote Dune?").persons == frozenset()
