"""gateway/cache/rule.py: the cosine rule serves a pair the guards pass cleanly, or with only
free differences, a little below the threshold; a pair with a costly difference, or with the
guards off, at the threshold; refused pairs never."""

from __future__ import annotations

import pytest

from gateway.cache.guards import CREDITS, MARGINS
from gateway.cache.rule import Rule

CLEAN = ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?")
FREE = ("How do I reset my password?", "How do I change my password?")
ADDED = ("What is the best book for GRE?", "What is the best book for GRE preparation?")
NEGATED = ("How do I reset my password?", "How do I not reset my password?")


def test_a_clean_pair_is_served_below_the_threshold_by_its_credit() -> None:
    rule = Rule(0.95)
    just_in = 0.95 - CREDITS["clean"] + 0.001
    served = rule.judge(*CLEAN, just_in)
    assert served.ok and served.score == pytest.approx(just_in + CREDITS["clean"])
    assert not rule.judge(*CLEAN, 0.95 - CREDITS["clean"] - 0.001).ok


def test_free_differences_earn_less_credit_than_none() -> None:
    rule = Rule(0.95)
    between = 0.95 - (CREDITS["clean"] + CREDITS["free"]) / 2
    assert rule.judge(*CLEAN, between).ok
    assert not rule.judge(*FREE, between).ok
    assert rule.judge(*FREE, 0.95 - CREDITS["free"] + 0.001).ok


def test_a_costly_difference_earns_no_credit() -> None:
    rule = Rule(0.9)
    needed = 0.9 + MARGINS["added"]
    assert not rule.judge(*ADDED, needed - 0.001).ok
    assert rule.judge(*ADDED, needed + 0.001).ok


def test_a_refused_pair_is_refused_at_any_cosine() -> None:
    verdict = Rule(0.95).judge(*NEGATED, 0.999)
    assert not verdict.ok and "negation" in verdict.reason


def test_without_guards_the_cosine_alone_meets_the_threshold() -> None:
    rule = Rule(0.95, guards=False)
    assert rule.floor == 0.95
    assert not rule.judge(*CLEAN, 0.949).ok and rule.judge(*NEGATED, 0.95).ok


def test_the_floor_reaches_the_largest_credit() -> None:
    assert Rule(0.95).floor == pytest.approx(0.95 - max(CREDITS.values()))
