"""gateway/cache/text_features.py (and questions.py through it): what a profile reads from a
text: numbers, units, entities, lemmas, and who is asked about."""

from __future__ import annotations

from gateway.cache.text_features import profile, stem


def test_profile_reads_numbers_units_and_entities() -> None:
    p = profile("Is 2 kg of Belgian chocolate worth $30 in Paris?")
    assert p.numbers == ("2", "30")
    assert p.units == ("kg", "usd")
    assert {"belgian", "paris"} <= p.entities


def test_headline_capitals_are_not_taken_for_names() -> None:
    assert profile("How Do I Find The Best Dentist").entities == frozenset()


def test_stemmer_matches_inflections() -> None:
    assert stem("strings") == stem("string")
    assert stem("earphones") == stem("earphone")
    assert stem("countries") == stem("country")


def test_stemmer_folds_spellings_and_endings() -> None:
    assert stem("colour") == stem("color")
    assert stem("organised") == stem("organized")
    assert stem("becoming") == stem("become")
    assert stem("planned") == stem("plan")
    assert stem("movies") == stem("movie")
    assert stem("string") == "string"  # not an -ing form


def test_answerer_questions_are_told_from_generic_you() -> None:
    assert profile("What is your favourite book?").answerer
    assert profile("Have you ever been to Paris?").answerer
    assert not profile("How do you make bread?").answerer
    assert not profile("Can you laminate a social security card?").answerer
