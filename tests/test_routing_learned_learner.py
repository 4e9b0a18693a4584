"""Tests for gateway/routing/learned/learner.py: outcome memory, estimates, recency, persistence."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.routing.learned.learner import Learner, Outcome
from gateway.routing.learned.memory import Projection
from tests.learning_helpers import FloatArray, learning, outcome, started, still

pytest_plugins = ["tests.routing_fixtures", "tests.learning_fixtures"]
TIERS = ("cheap", "reasoning")


def fail_tax_pass_chat(tax: FloatArray, chat: FloatArray, at_s: float = 0.0) -> list[Outcome]:
    return ([outcome(v, "cheap", False, at_s) for v in tax]
            + [outcome(v, "cheap", True, at_s) for v in chat]
            + [outcome(v, "reasoning", True, at_s) for v in [*tax, *chat]])


def test_a_learner_with_no_outcomes_answers_the_prior(tax_vectors: FloatArray) -> None:
    learner = Learner(learning(), clock=still())
    prior = {"cheap": 0.3, "reasoning": 0.8}
    estimates = learner.estimate(tax_vectors[0], TIERS, prior=prior)
    assert {t: e.p for t, e in estimates.items()} == prior
    assert all(e.count == 0 and e.evidence == 0.0 for e in estimates.values())


def test_nearby_failures_lower_a_tier_and_leave_other_prompts_alone(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    learner = Learner(learning(k=8), clock=still())
    # Learn from all but the last prompt of each class; ask about the unseen ones.
    learner.learn(fail_tax_pass_chat(tax_vectors[:-1], chat_vectors[:-1]))
    tax = learner.estimate(tax_vectors[-1], TIERS)
    chat = learner.estimate(chat_vectors[-1], TIERS)
    assert tax["cheap"].p < 0.5 < chat["cheap"].p
    assert tax["cheap"].p < tax["reasoning"].p
    assert tax["cheap"].count > 0 and chat["cheap"].count > 0


def test_an_unrelated_prompt_is_not_moved_by_the_only_outcomes_remembered(
    onnx_embedder: OnnxEmbedder, tax_vectors: FloatArray,
) -> None:
    # A sparse memory: one bad cheap answer to a VAT question, one retry on a tax question.
    learner = Learner(learning(), clock=still())
    learner.learn([outcome(tax_vectors[3], "cheap", False),
                   outcome(tax_vectors[0], "cheap", False)])
    capital, vat = onnx_embedder.embed(["What is the capital of Australia?",
                                        "how is VAT charged on goods imported from China?"])
    projection = Projection(learner.settings.dim, learner.settings.seed)
    similarity = float((projection(capital) @ projection(tax_vectors[3]).T)[0, 0])
    assert similarity < learner.settings.floor  # the nearest outcome, but an unrelated one
    prior = {"cheap": 0.9, "reasoning": 0.9}
    unrelated = learner.estimate(capital, TIERS, prior=prior)
    assert {t: (e.p, e.count) for t, e in unrelated.items()} == {t: (0.9, 0) for t in TIERS}
    # A related prompt above the floor still learns from it.
    related = learner.estimate(vat, TIERS, prior=prior)["cheap"]
    assert related.count > 0 and related.p < 0.9


def test_a_prompt_whose_nearest_outcome_is_below_the_anchor_rests_less_on_it(
    onnx_embedder: OnnxEmbedder, tax_vectors: FloatArray,
) -> None:
    prior = {"cheap": 0.9, "reasoning": 0.9}
    outcomes = [outcome(v, "cheap", False) for v in tax_vectors[:-1]]
    (vat,) = onnx_embedder.embed(["how is VAT charged on goods imported from China?"])
    projection = Projection(learning().dim, learning().seed)
    nearest = float((projection(vat) @ projection(tax_vectors[:-1]).T).max())

    def cheap(anchor: float) -> tuple[float, float]:
        learner = Learner(learning(k=8, anchor=anchor, linear_weight=0.0), clock=still())
        learner.learn(outcomes)
        e = learner.estimate(vat, TIERS, prior=prior)["cheap"]
        return e.p, e.evidence

    relative = cheap(0.0)
    assert cheap(nearest - 0.01) == relative  # the nearest reaches the anchor: as before
    far = cheap(min(1.0, nearest + 0.2))
    # The same failures, each worth less: the estimate stays nearer the prior.
    assert far[1] < relative[1] and relative[0] < far[0] < 0.9


def test_with_the_anchor_off_even_a_dissimilar_nearest_outcome_weighs_in_full(
    tax_vectors: FloatArray,
) -> None:
    # A floor below 0 lets a remembered prompt pointing the other way count: with the anchor
    # off (0) it is still weighed relative to itself, the nearest, as without an anchor.
    learner = Learner(learning(floor=-1.0, anchor=0.0, linear_weight=0.0), clock=still())
    learner.learn([outcome(tax_vectors[0], "cheap", False)])
    e = learner.estimate(-tax_vectors[0], TIERS, prior={"cheap": 0.9, "reasoning": 0.9})
    assert e["cheap"].count == 1 and e["cheap"].evidence == 1.0


def test_recent_outcomes_outweigh_old_ones(tax_vectors: FloatArray) -> None:
    now = [0.0]
    learner = Learner(learning(half_life_s=100.0, k=24), clock=lambda: now[0])
    learner.learn(outcome(v, "cheap", False, at_s=0.0) for v in tax_vectors[:-1])
    now[0] = 1000.0  # ten half-lives later the cheap model got better
    learner.learn(outcome(v, "cheap", True, at_s=1000.0) for v in tax_vectors[:-1])
    improved = learner.estimate(tax_vectors[-1], TIERS)["cheap"].p
    assert improved > 0.8
    # The same outcomes, the other way round in time, say the opposite.
    reverse = Learner(learning(half_life_s=100.0, k=24), clock=lambda: now[0])
    reverse.learn(outcome(v, "cheap", True, at_s=0.0) for v in tax_vectors[:-1])
    reverse.learn(outcome(v, "cheap", False, at_s=1000.0) for v in tax_vectors[:-1])
    assert reverse.estimate(tax_vectors[-1], TIERS)["cheap"].p < 0.2


def test_memory_keeps_only_the_newest_max_outcomes(tax_vectors: FloatArray) -> None:
    newest = [outcome(v, "cheap", True) for v in tax_vectors[:8] for _ in range(2)]
    # The neighbours' memory forgets by count; the linear estimate only by half-life: off here.
    settings = learning(max_outcomes=16, k=16, linear_weight=0.0)
    learner = Learner(settings, clock=still())
    learner.learn(outcome(v, "cheap", False) for v in np.repeat(tax_vectors, 3, axis=0))
    learner.learn(newest)
    assert learner.stats().remembered == 16
    # Every failure has been forgotten: the learner answers as one that saw only the newest.
    fresh = Learner(settings, clock=still())
    fresh.learn(newest)
    for v in tax_vectors:
        assert learner.estimate(v, TIERS) == fresh.estimate(v, TIERS)
    assert learner.estimate(tax_vectors[0], TIERS)["cheap"].p > 0.5


def test_tenant_scope_keeps_each_tenants_outcomes_apart(tax_vectors: FloatArray) -> None:
    learner = Learner(learning(scope="tenant"), clock=still())
    learner.learn(outcome(v, "cheap", False, tenant="acme") for v in tax_vectors[:-1])
    assert learner.estimate(tax_vectors[-1], TIERS, "acme")["cheap"].count > 0
    assert learner.estimate(tax_vectors[-1], TIERS, "globex")["cheap"].count == 0
    shared = Learner(learning(scope="global"), clock=still())
    shared.learn(outcome(v, "cheap", False, tenant="acme") for v in tax_vectors[:-1])
    assert shared.estimate(tax_vectors[-1], TIERS, "globex")["cheap"].count > 0


def test_unusable_outcomes_and_a_full_queue_are_dropped_and_counted(
    tax_vectors: FloatArray,
) -> None:
    learner = Learner(learning(queue=2), clock=still())
    nan = np.full_like(tax_vectors[0], np.nan)
    learner.observe(Outcome(nan, "cheap", 0.0))
    learner.observe(Outcome(tax_vectors[0], "cheap", 1.5))
    learner.observe(Outcome(tax_vectors[0], "", 1.0))
    for v in tax_vectors[:3]:
        learner.observe(outcome(v, "cheap", True))
    stats = learner.stats()
    assert (stats.pending, stats.dropped) == (2, 4)


def test_a_vector_of_another_size_gets_the_prior(tax_vectors: FloatArray) -> None:
    learner = Learner(learning(), clock=still())
    learner.learn(outcome(v, "cheap", False) for v in tax_vectors)
    estimates = learner.estimate(tax_vectors[0][:100], TIERS, prior={"cheap": 0.7})
    assert estimates["cheap"].p == 0.7 and estimates["cheap"].count == 0


async def test_observed_outcomes_are_learned_in_the_background(
    tax_vectors: FloatArray,
) -> None:
    learner = Learner(learning(), clock=still())
    await learner.start()
    try:
        for v in tax_vectors[:-1]:
            learner.observe(outcome(v, "cheap", False))
        await learner.drained()
        assert learner.stats().remembered == len(tax_vectors) - 1
        assert learner.estimate(tax_vectors[-1], TIERS)["cheap"].p < 0.5
    finally:
        await learner.close()


async def test_a_batch_that_fails_to_fold_is_dropped_and_learning_goes_on(
    tax_vectors: FloatArray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    learner = Learner(learning(), clock=still())
    real_fold = learner._fold
    failures = [RuntimeError("a graph update failed")]

    def fold(outcomes: list[Outcome]) -> None:
        if failures:
            raise failures.pop()
        real_fold(outcomes)

    monkeypatch.setattr(learner, "_fold", fold)
    await learner.start()
    try:
        learner.observe(outcome(tax_vectors[0], "cheap", False))
        await learner.drained()
        for v in tax_vectors[1:-1]:  # the learner's task survived the failed batch
            learner.observe(outcome(v, "cheap", False))
        await learner.drained()
        stats = learner.stats()
        assert (stats.remembered, stats.dropped) == (len(tax_vectors) - 2, 1)
        assert learner.estimate(tax_vectors[-1], TIERS)["cheap"].p < 0.5
        assert "folding 1 outcomes failed" in caplog.text
    finally:
        await learner.close()


async def test_estimates_made_while_the_worker_thread_folds_stay_sound(
    tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    # Folds run in a worker thread; estimates on the loop take the same lock. Overwriting a
    # small memory many times over while estimating exercises both sides at once.
    learner = Learner(learning(max_outcomes=64), clock=still())
    rng = np.random.default_rng(5)
    base = np.vstack([tax_vectors, chat_vectors])
    noisy = base[rng.integers(0, len(base), 3000)] + rng.normal(0, 0.02, (3000, base.shape[1]))
    await learner.start()
    try:
        for i, v in enumerate(noisy.astype(np.float32)):
            learner.observe(outcome(v, "cheap", bool(i % 2)))
        seen = 0
        while learner.stats().pending or seen == 0:
            for v in base:
                p = learner.estimate(v, TIERS)["cheap"].p
                assert 0.0 <= p <= 1.0
                seen += 1
            await asyncio.sleep(0)
        await learner.drained()
        assert learner.stats().remembered == 64 and learner.stats().dropped == 0
    finally:
        await learner.close()


async def test_learned_state_survives_a_restart(
    tmp_path: Path, tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    path = tmp_path / "learning.sqlite3"
    first = Learner(learning(), path=path, clock=still(5.0))
    await first.start()
    for o in fail_tax_pass_chat(tax_vectors[:-1], chat_vectors[:-1], at_s=5.0):
        first.observe(o)
    await first.drained()
    before = {name: first.estimate(v, TIERS) for name, v in
              (("tax", tax_vectors[-1]), ("chat", chat_vectors[-1]))}
    await first.close()

    second = Learner(learning(), path=path, clock=still(5.0))
    await second.start()
    try:
        assert second.stats().remembered == first.stats().remembered
        for name, v in (("tax", tax_vectors[-1]), ("chat", chat_vectors[-1])):
            after = second.estimate(v, TIERS)
            for tier in TIERS:  # vectors are stored as float16: equal to a few decimals
                assert abs(after[tier].p - before[name][tier].p) < 1e-3
                assert after[tier].count == before[name][tier].count
    finally:
        await second.close()


async def test_outcomes_still_queued_at_close_are_written(
    tmp_path: Path, tax_vectors: FloatArray
) -> None:
    path = tmp_path / "learning.sqlite3"
    learner = Learner(learning(), path=path, clock=still(5.0))
    await learner.start()
    for v in tax_vectors:
        learner.observe(outcome(v, "cheap", False))
    await learner.close()
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
    assert count == len(tax_vectors)


async def test_the_file_keeps_at_most_max_outcomes_per_scope(
    tmp_path: Path, tax_vectors: FloatArray
) -> None:
    path = tmp_path / "learning.sqlite3"
    for _ in range(3):
        learner = Learner(learning(max_outcomes=16), path=path, clock=still())
        await learner.start()
        learner.learn(outcome(v, "cheap", True) for v in tax_vectors)
        await learner.close()
    restored = Learner(learning(max_outcomes=16), path=path, clock=still())
    await restored.start()
    await restored.close()
    assert restored.stats().remembered == 16
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
    assert count == 16


async def test_the_linear_estimate_survives_a_restart_beyond_the_outcomes_kept(
    tmp_path: Path, tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    # The file keeps 16 outcomes; the linear statistics hold all 48 and are saved beside them.
    path = tmp_path / "learning.sqlite3"
    settings = learning(max_outcomes=16, linear_weight=1000.0, ridge=0.1)
    first = Learner(settings, path=path, clock=still(5.0))
    await first.start()
    first.learn(fail_tax_pass_chat(tax_vectors, chat_vectors, at_s=5.0))
    before = [first.estimate(v, TIERS) for v in (*tax_vectors, *chat_vectors)]
    await first.close()
    with sqlite3.connect(path) as db:
        (saved,) = db.execute("SELECT COUNT(*) FROM linear").fetchone()
    assert saved == len(TIERS)

    second = Learner(settings, path=path, clock=still(5.0))
    await second.start()
    try:
        after = [second.estimate(v, TIERS) for v in (*tax_vectors, *chat_vectors)]
    finally:
        await second.close()
    rebuilt = Learner(settings, clock=still(5.0))  # what the 16 kept outcomes alone would say
    rebuilt.learn(fail_tax_pass_chat(tax_vectors, chat_vectors, at_s=5.0)[-16:])
    alone = [rebuilt.estimate(v, TIERS) for v in (*tax_vectors, *chat_vectors)]
    for b, a in zip(before, after, strict=True):
        assert abs(a["cheap"].p - b["cheap"].p) < 1e-3
    assert max(abs(r["cheap"].p - b["cheap"].p) for b, r in zip(before, alone, strict=True)) > 0.05
    # Tax questions fail on the cheap tier and chat passes: the restored estimate still says so.
    assert max(e["cheap"].p for e in after[:len(tax_vectors)]) < min(
        e["cheap"].p for e in after[len(tax_vectors):])


async def test_a_linear_checkpoint_torn_between_its_tiers_folds_no_outcome_twice(
    tmp_path: Path, tax_vectors: FloatArray
) -> None:
    # Each tier's row commits on its own (autocommit): a process that dies between them
    # leaves one tier's statistics newer than the other's. Each tier is restored from its own
    # row, with only the outcomes after that row folded in again.
    path = tmp_path / "learning.sqlite3"
    settings = learning(max_outcomes=100_000, linear_weight=1000.0, ridge=0.1)
    for run, cheap_ok in enumerate((False, True)):  # checkpointed at each close only
        learner = Learner(settings, path=path, clock=still(5.0))
        await learner.start()
        for v in tax_vectors:
            learner.observe(outcome(v, "cheap", cheap_ok, at_s=5.0))
            learner.observe(outcome(v, "reasoning", True, at_s=5.0))
        await learner.close()
        if run == 0:
            with sqlite3.connect(path) as db:
                older = db.execute("SELECT a, b, total, at_s, through_id FROM linear "
                                   "WHERE tier = 'reasoning'").fetchone()
    expected = [learner.estimate(v, TIERS) for v in tax_vectors]
    with sqlite3.connect(path) as db:  # died after the cheap tier's row of the second one
        db.execute("UPDATE linear SET a = ?, b = ?, total = ?, at_s = ?, through_id = ? "
                   "WHERE tier = 'reasoning'", older)
    async with started(settings, path, 5.0) as restarted:
        after = [restarted.estimate(v, TIERS) for v in tax_vectors]
    for e, a in zip(expected, after, strict=True):
        for tier in TIERS:
            assert a[tier].p == pytest.approx(e[tier].p, abs=1e-6), tier
            assert a[tier].evidence == pytest.approx(e[tier].evidence, rel=1e-6), tier


async def test_a_damaged_linear_checkpoint_is_rebuilt_from_the_kept_outcomes(
    tmp_path: Path, tax_vectors: FloatArray, chat_vectors: FloatArray
) -> None:
    path = tmp_path / "learning.sqlite3"
    settings = learning(max_outcomes=16, linear_weight=1000.0, ridge=0.1)
    outcomes = fail_tax_pass_chat(tax_vectors, chat_vectors, at_s=5.0)
    first = Learner(settings, path=path, clock=still(5.0))
    await first.start()
    first.learn(outcomes)
    await first.close()
    with sqlite3.connect(path) as db:  # one tier's coefficients cut short, as by a bad disk
        db.execute("UPDATE linear SET b = substr(b, 1, 20) WHERE tier = 'cheap'")

    second = Learner(settings, path=path, clock=still(5.0))
    await second.start()  # not a crash at start-up
    try:
        after = [second.estimate(v, TIERS) for v in (*tax_vectors, *chat_vectors)]
    finally:
        await second.close()
    rebuilt = Learner(settings, clock=still(5.0))  # every tier from the 16 kept outcomes alone
    rebuilt.learn(outcomes[-16:])
    alone = [rebuilt.estimate(v, TIERS) for v in (*tax_vectors, *chat_vectors)]
    for a, r in zip(after, alone, strict=True):
        for tier in TIERS:  # the file keeps vectors as float16: equal to a few decimals
            assert abs(a[tier].p - r[tier].p) < 1e-3


def _escalated(vector: FloatArray, tier: str, ok: bool) -> Outcome:
    return replace(outcome(vector, tier, ok), escalated=True)


def test_an_outcome_observed_after_an_escalation_does_not_lower_the_tiers_estimate(
    tax_vectors: FloatArray,
) -> None:
    # The reasoning tier was asked about these tax questions only because the cheap tier had
    # failed them: its failures there speak of the prompts the cheap tier fails.
    prior = {"cheap": 0.9, "reasoning": 0.9}

    def reasoning_after(weight: float, escalated: bool) -> float:
        learner = Learner(learning(k=8, escalated_weight=weight), clock=still())
        make = _escalated if escalated else (lambda v, t, ok: outcome(v, t, ok))
        learner.learn([outcome(v, "cheap", False) for v in tax_vectors[:-1]]
                      + [make(v, "reasoning", False) for v in tax_vectors[:-1]])
        estimates = learner.estimate(tax_vectors[-1], TIERS, prior=prior)
        assert estimates["cheap"].p < 0.5  # the cheap failures themselves count in full
        return estimates["reasoning"].p

    assert reasoning_after(0.0, escalated=True) == 0.9  # left out: the prior stands
    direct = reasoning_after(0.0, escalated=False)
    assert direct < 0.5
    assert direct < reasoning_after(0.5, escalated=True) < 0.9  # a smaller say when configured
    assert reasoning_after(1.0, escalated=True) == pytest.approx(direct)


async def test_an_escalation_observed_outcome_keeps_its_flag_across_a_restart(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    path = tmp_path / "learning.sqlite3"
    first = Learner(learning(k=8), path=path, clock=still())
    await first.start()
    first.learn(_escalated(v, "reasoning", False) for v in tax_vectors[:-1])
    await first.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*), SUM(escalated) FROM outcomes").fetchone() == (11, 11)
    # Read back with a say for escalated outcomes: they were written, flagged, and count now.
    async with started(learning(k=8, escalated_weight=1.0), path) as second:
        assert second.estimate(tax_vectors[-1], TIERS)["reasoning"].p < 0.5


async def test_an_older_file_without_the_escalation_columns_reads_its_rows_as_direct(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    path = tmp_path / "learning.sqlite3"
    with sqlite3.connect(path) as db:  # the outcomes table as the third round wrote it
        db.execute("CREATE TABLE outcomes (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, "
                   "tier TEXT NOT NULL, acceptable REAL NOT NULL, weight REAL NOT NULL, "
                   "at_s REAL NOT NULL, tenant TEXT, source TEXT NOT NULL, vector BLOB NOT NULL)")
        db.execute("CREATE TABLE linear (scope TEXT NOT NULL, tier TEXT NOT NULL, a BLOB NOT NULL,"
                   " b BLOB NOT NULL, total REAL NOT NULL, at_s REAL NOT NULL, "
                   "through_id INTEGER NOT NULL, PRIMARY KEY (scope, tier))")
        db.executemany(
            "INSERT INTO outcomes (scope, tier, acceptable, weight, at_s, tenant, source, vector)"
            " VALUES ('', 'reasoning', 0.0, 1.0, 0.0, NULL, 'feedback', ?)",
            [(v.astype(np.float16).tobytes(),) for v in tax_vectors[:-1]])
    async with started(learning(k=8), path) as learner:
        assert learner.stats().remembered == 11
        assert learner.estimate(tax_vectors[-1], TIERS)["reasoning"].p < 0.5  # counted, direct
        learner.observe(_escalated(tax_vectors[0], "reasoning", True))
        await learner.drained()
    with sqlite3.connect(path) as db:
        flags = [f for (f,) in db.execute("SELECT escalated FROM outcomes ORDER BY id")]
    assert flags == [0] * 11 + [1]


async def test_a_changed_escalated_weight_rebuilds_the_linear_checkpoint_from_the_outcomes(
    tmp_path: Path, tax_vectors: FloatArray, chat_vectors: FloatArray,
) -> None:
    # The checkpoint was folded leaving the escalated reasoning failures out; read back with
    # them counted in full, it must not keep saying what the old setting made of them.
    path = tmp_path / "learning.sqlite3"
    outcomes = [*fail_tax_pass_chat(tax_vectors, chat_vectors, at_s=5.0),
                *(replace(_escalated(v, "reasoning", False), at_s=5.0) for v in tax_vectors)]
    first = Learner(learning(linear_weight=1000.0, ridge=0.1), path=path, clock=still(5.0))
    await first.start()
    first.learn(outcomes)
    await first.close()

    counted = learning(linear_weight=1000.0, ridge=0.1, escalated_weight=1.0)
    async with started(counted, path, 5.0) as second:
        after = [second.estimate(v, TIERS)["reasoning"].p for v in tax_vectors]
    alone = Learner(counted, clock=still(5.0))  # the same outcomes, learned with the new say
    alone.learn(outcomes)
    expected = [alone.estimate(v, TIERS)["reasoning"].p for v in tax_vectors]
    assert after == pytest.approx(expected, abs=1e-3)
