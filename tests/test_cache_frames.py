"""gateway/cache/frames.py: the words that only frame a question both sides ask, and only when
both ask it that way."""

from __future__ import annotations

from gateway.cache.frames import frame_words
from gateway.cache.guards import compare
from gateway.cache.text_features import profile, stem


def _frames(a: str, b: str) -> frozenset[str]:
    return frame_words(profile(a), profile(b))


def test_a_purpose_asked_as_what_it_does_frames_the_question() -> None:
    stored, asked = ("What does the yield keyword do in Python?",
                     "What is the purpose of the yield keyword in Python?")
    assert stem("purpose") in _frames(stored, asked)
    assert compare(stored, asked).differences == ()
    # asked of a thing, not of what it does, the purpose is more than the thing
    assert _frames("What is the yield keyword in Python?", asked) == frozenset()
    assert compare("What is the yield keyword in Python?", asked).margin > 0


def test_measure_count_and_agent_words_frame_only_the_same_question() -> None:
    assert stem("height") in _frames("How tall is the Eiffel Tower?",
                                     "What is the height of the Eiffel Tower?")
    # a measure asked by its verb: dropping only the noun would leave "weigh" as an added word
    weight = ("How much does a blue whale weigh?", "What is the weight of a blue whale?")
    assert {stem("weigh"), stem("weight")} <= _frames(*weight)
    assert compare(*weight).differences == ()
    assert stem("number") in _frames("How many moons does Jupiter have?",
                                     "What is the number of moons of Jupiter?")
    assert stem("author") in _frames("Who wrote Dune?", "Who is the author of Dune?")
    # an agent noun with no verb of its own on the other side frames nothing
    assert _frames("Who read Dune?", "Who is the author of Dune?") == frozenset()
    assert _frames("What is the height of the Eiffel Tower?",
                   "When was the Eiffel Tower built?") == frozenset()


def test_an_agent_noun_frames_only_a_side_that_does_not_ask_with_its_verb() -> None:
    # "Who wrote to the author of Dune?" asks about someone else than the author
    assert _frames("Who wrote to the author of Dune?", "Who wrote Dune?") == frozenset()
    assert compare("Who wrote to the author of Dune?", "Who wrote Dune?").margin > 0

