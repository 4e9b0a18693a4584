"""Tests for gateway/routing/outcomes.py: answers, escalations, retries and feedback become the
learner's outcomes (a real in-memory learner, real prompt vectors, a real signal store)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.core.routing_settings import OutcomeSettings
from gateway.routing.learned.learner import Learner
from gateway.routing.outcomes import OutcomeFeed
from gateway.routing.signals import Answered, SignalStore, prompt_key
from tests.learning_helpers import FloatArray, learning, still

pytest_plugins = ["tests.routing_fixtures", "tests.learning_fixtures"]
TIERS = ("cheap", "reasoning")


def _settings(**weights: float) -> OutcomeSettings:
    merged = {**dict(OutcomeSettings().weights), **weights}
    return OutcomeSettings(weights=tuple(merged.items()))


def _feed(settings: OutcomeSettings | None = None,
          signals: SignalStore | None = None) -> tuple[OutcomeFeed, Learner]:
    learner = Learner(learning(), clock=still(1000.0))
    return OutcomeFeed(settings or _settings(), signals=signals, learner=learner,
                       clock=learner.clock), learner


def _answer(vector: FloatArray | None, request_id: str = "r1", tier: str = "cheap",
            **extra: object) -> Answered:
    answered = Answered(request_id, "acme", tier, "factual", vector, prompt_key(request_id),
                        at_s=1000.0)
    return replace(answered, **extra)  # type: ignore[arg-type]


def _p(learner: Learner, vector: FloatArray, tier: str) -> float:
    return learner.estimate(vector, TIERS, prior={"cheap": 0.9, "reasoning": 0.9})[tier].p


async def test_an_escalated_answer_counts_against_the_failed_tier_only(
    tax_vectors: FloatArray,
) -> None:
    # The reasoning tier answered because the cheap answer was empty: its outcome is selected
    # by that failure and stays out of its estimate (``escalated_weight`` 0 by default).
    feed, learner = _feed()
    feed.answered(_answer(tax_vectors[0], tier="reasoning",
                          failed=(("cheap", "empty_answer"),)))
    await learner.drained()
    assert learner.stats().remembered == 1
    assert _p(learner, tax_vectors[0], "cheap") < 0.9 == _p(learner, tax_vectors[0], "reasoning")


async def test_an_escalated_answer_counts_for_the_answering_tier_with_its_configured_say(
    tax_vectors: FloatArray,
) -> None:
    learner = Learner(learning(escalated_weight=0.5), clock=still(1000.0))
    feed = OutcomeFeed(_settings(), learner=learner, clock=learner.clock)
    feed.answered(_answer(tax_vectors[0], tier="reasoning",
                          failed=(("cheap", "empty_answer"),)))
    await learner.drained()
    assert learner.stats().remembered == 2
    assert _p(learner, tax_vectors[0], "cheap") < 0.9 < _p(learner, tax_vectors[0], "reasoning")


async def test_in_a_chain_of_three_a_middle_tier_asked_after_a_failed_check_is_escalated(
    tax_vectors: FloatArray,
) -> None:
    # cheap failed a check, so mid was asked only because of it: mid's own failure speaks of
    # the prompts cheap fails and stays out of mid's estimate, like the answer that followed.
    prior = {"cheap": 0.9, "mid": 0.9, "reasoning": 0.9}
    feed, learner = _feed()
    feed.answered(_answer(tax_vectors[0], tier="reasoning",
                          failed=(("cheap", "empty_answer"), ("mid", "invalid_json"))))
    await learner.drained()
    after_check = learner.estimate(tax_vectors[0], tuple(prior), prior=prior)
    assert learner.stats().remembered == 1
    assert after_check["cheap"].p < 0.9
    assert after_check["mid"].p == after_check["reasoning"].p == 0.9
    # cheap was unavailable instead: mid was asked as if first, and its failure counts.
    feed, learner = _feed()
    feed.answered(_answer(tax_vectors[0], tier="reasoning",
                          failed=(("cheap", "tier_failed"), ("mid", "invalid_json"))))
    await learner.drained()
    after_outage = learner.estimate(tax_vectors[0], tuple(prior), prior=prior)
    assert after_outage["mid"].p < 0.9 == after_outage["reasoning"].p


async def test_a_tier_whose_deployments_all_failed_weighs_as_a_provider_failure(
    tax_vectors: FloatArray,
) -> None:
    feed, learner = _feed(_settings(provider_failure=0.0))
    feed.answered(_answer(tax_vectors[0], tier="reasoning", failed=(("cheap", "tier_failed"),)))
    await learner.drained()
    assert learner.stats().remembered == 1  # only the answer: failures are switched off
    assert _p(learner, tax_vectors[0], "cheap") == 0.9
    # No check failed: the reasoning answer is not selected by one and counts as direct.
    assert _p(learner, tax_vectors[0], "reasoning") > 0.9


async def test_an_outcome_is_scored_against_the_estimate_its_tier_was_chosen_with(
    tax_vectors: FloatArray,
) -> None:
    # The cheap answer failed a check (chosen at 0.8); the reasoning answer came only because
    # of that failure, not because of its estimate, and is not scored.
    feed, learner = _feed()
    feed.answered(_answer(tax_vectors[0], tier="reasoning", failed=(("cheap", "empty_answer"),),
                          decided=(("cheap", 0.8), ("reasoning", 0.9))))
    await learner.drained()
    assert learner.bias("cheap") == pytest.approx(-0.8 / 21)  # weight 1, 20 of "no bias"
    assert learner.bias("reasoning") == 0.0


async def test_a_score_of_an_answer_from_the_signal_store_is_scored_against_its_estimate(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    store = await SignalStore.open(tmp_path / "signals.sqlite3", model="m")
    try:
        feed, learner = _feed(replace(_settings(answer=0.0), recent_answers=1), store)
        feed.answered(_answer(tax_vectors[0], "r1", decided=(("cheap", 0.7),)))
        feed.answered(_answer(tax_vectors[1], "r2"))
        assert feed.recent.find("acme", "r1") is None  # forgotten in memory
        found = await feed.find("acme", "r1")
        assert found is not None and found.decided == (("cheap", 0.7),)
        assert await feed.feedback(found, 0.0, None)
        await learner.drained()
        assert learner.bias("cheap") == pytest.approx(2.0 * -0.7 / 22)  # feedback weighs 2
    finally:
        await store.close()


async def test_a_cached_answer_teaches_nothing_until_someone_scores_it(
    tax_vectors: FloatArray,
) -> None:
    feed, learner = _feed()
    feed.answered(_answer(tax_vectors[0], cached=True))
    await learner.drained()
    assert learner.stats().remembered == 0
    found = await feed.find("acme", "r1")
    assert found is not None and found.cached
    assert await feed.feedback(found, 0.0, "not what I asked")
    await learner.drained()
    assert learner.stats().remembered == 1
    assert _p(learner, tax_vectors[0], "cheap") < 0.9


async def test_a_quick_retry_counts_against_the_answer_asked_for_again(
    tax_vectors: FloatArray,
) -> None:
    with_retries, learner = _feed(replace(_settings(), retry_window_s=60.0))
    without, plain = _feed(replace(_settings(), retry_window_s=0.0))
    for feed in (with_retries, without):
        feed.answered(_answer(tax_vectors[0], "r1"))
        feed.answered(replace(_answer(tax_vectors[0], "r2"), at_s=1030.0))
    await learner.drained()
    await plain.drained()
    assert learner.stats().remembered == plain.stats().remembered + 1
    assert _p(learner, tax_vectors[0], "cheap") < _p(plain, tax_vectors[0], "cheap")


async def test_without_a_vector_nothing_is_learned(tax_vectors: FloatArray) -> None:
    feed, learner = _feed()
    feed.answered(_answer(None, failed=(("cheap", "truncated"),)))
    found = await feed.find("acme", "r1")
    assert found is not None
    assert await feed.feedback(found, 1.0, None)
    await learner.drained()
    assert learner.stats().remembered == 0


async def test_an_answer_that_left_memory_is_found_in_the_signal_store_with_its_vector(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    store = await SignalStore.open(tmp_path / "signals.sqlite3", model="m")
    try:
        feed, learner = _feed(replace(_settings(), recent_answers=1), store)
        feed.answered(_answer(tax_vectors[0], "r1"))
        feed.answered(_answer(tax_vectors[1], "r2"))
        assert feed.recent.find("acme", "r1") is None  # forgotten in memory
        found = await feed.find("acme", "r1")
        assert found is not None and found.tier == "cheap" and found.route == "factual"
        assert found.vector is not None and (found.vector == tax_vectors[0]).all()
        assert await feed.find("globex", "r1") is None
        assert await feed.feedback(found, 0.0, None)
        await learner.drained()
        assert _p(learner, tax_vectors[0], "cheap") < 0.9
    finally:
        await store.close()


async def test_only_the_first_score_of_an_answer_is_learned(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    store = await SignalStore.open(tmp_path / "signals.sqlite3", model="m")
    try:
        feed, learner = _feed(signals=store)
        feed.answered(_answer(tax_vectors[0], cached=True))
        found = await feed.find("acme", "r1")
        assert found is not None
        assert await feed.feedback(found, 0.0, None)
        assert not await feed.feedback(found, 0.0, "again")
        # A feed that remembers nothing (a restart) still finds the first score on disk.
        again, _ = _feed(signals=store)
        assert not await again.feedback(found, 0.0, "after a restart")
        await learner.drained()
        assert learner.stats().remembered == 1
    finally:
        await store.close()
