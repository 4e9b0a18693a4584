"""gateway/cache/spelling.py: misspelt prose words fold to the common word one edit away; known
words, names, code and short words are left as they are (the real word lists)."""

from __future__ import annotations

import pytest

from gateway.cache.spelling import Speller, load


@pytest.fixture(scope="module")
def speller() -> Speller:
    return load()


@pytest.mark.parametrize(("typed", "meant"), [
    ("how to fix a leaky fauset", "how to fix a leaky faucet"),  # a letter replaced
    ("how many calroies are in a banana", "how many calories are in a banana"),  # swapped
    ("remove a wine stain from carpett", "remove a wine stain from carpet"),  # one too many
    ("what are the simptoms of dehydration?", "what are the symptoms of dehydration?"),
])
def test_a_misspelt_word_folds_to_the_common_word_one_edit_away(
        speller: Speller, typed: str, meant: str) -> None:
    assert speller.fold(typed) == meant


@pytest.mark.parametrize("text", [
    "How do I use async and await in Rust?",  # jargon one edit from "sync"
    "How do I sort a dict by value?",  # a Python name
    "Is numpy faster than pandas?",  # another first letter would make "lumpy"
    "What is the capital of Austria?",  # known words
    "Why does x.lenght() fail?",  # code
    "Who is Fauset?",  # a capitalised word is a name
    "Are flys insects?",  # too short to guess
])
def test_known_words_names_code_and_short_words_are_left_alone(
        speller: Speller, text: str) -> None:
    assert speller.fold(text) == text


def test_a_contraction_typed_without_its_apostrophe_gets_it_back(speller: Speller) -> None:
    assert speller.fold("whats the fastest way to learn to type") == \
        "what's the fastest way to learn to type"
    assert speller.fold("Im sure it doesnt work") == "I'm sure it doesn't work"


def test_a_capitalised_word_is_folded_only_where_it_starts_the_text(speller: Speller) -> None:
    assert speller.fold("Simptoms of the flu?") == "Symptoms of the flu?"
    assert speller.fold("Does Simptoms Inc sell masks?") == "Does Simptoms Inc sell masks?"


def test_of_several_corrections_the_most_frequent_is_taken() -> None:
    speller = Speller.of({"house": 500, "horse": 200}, frozenset())
    assert speller.correction("hoose") == "house"
    assert Speller.of({"house": 50}, frozenset()).correction("hoose") is None  # too rare to trust
    assert Speller.of({"house": 500}, frozenset({"hoose"})).correction("hoose") is None  # known


@pytest.mark.parametrize("text", [
    "What are memes?",  # "meme" is known, so its plural is a word, not a typo of "memos"
    "How do podcasts make money?",
    "Do influencers pay taxes?",  # "influence" + "rs"
    "Are esports real sports?",  # "e" + a known word, not "escorts"
])
def test_a_regular_form_of_a_known_word_is_never_folded(speller: Speller, text: str) -> None:
    assert speller.fold(text) == text


def test_a_form_missing_its_doubled_consonant_is_still_a_typo(speller: Speller) -> None:
    assert speller.fold("it occured at the begining") == "it occurred at the beginning"
    assert speller.fold("How long to boil potatos?") == "How long to boil potatoes?"


@pytest.mark.parametrize("text", [
    "What is fourty percent of 80?",  # "fourth" would read a number the writer did not type
    "Can I bake bread withot yeast?",  # "without" would read a negation
    "Is 500 gramms of sugar too much?",  # "grams" a unit (and not "grammy" in its place)
    "What is your favorit movie?",  # "favorite" asks about the one answering
])
def test_a_typo_is_never_folded_into_a_word_the_guards_read(
        speller: Speller, text: str) -> None:
    assert speller.fold(text) == text
