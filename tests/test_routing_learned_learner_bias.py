"""Tests for gateway/routing/learned/learner.py's bias: outcomes scored against the estimate the
policy decided with, its persistence across restarts, and an older file's migration."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.routing.learned.learner import Learner, Outcome
from tests.learning_helpers import FloatArray, learning, started, still

pytest_plugins = ["tests.routing_fixtures", "tests.learning_fixtures"]
TIERS = ("cheap", "reasoning")


def decided(vectors: FloatArray, n: int, tier: str = "cheap", acceptable: float = 0.6,
            estimate: float | None = 0.9, *, escalated: bool = False) -> list[Outcome]:
    """``n`` outcomes of ``tier`` over ``vectors`` in turn, each decided at ``estimate``."""
    return [Outcome(vectors[i % len(vectors)], tier, acceptable, 1.0, 5.0, None, "feedback",
                    escalated, estimate) for i in range(n)]


def test_the_bias_is_the_outcome_less_the_estimate_the_decision_chose_with(
    tax_vectors: FloatArray,
) -> None:
    # The neutral prior's weight changes what the learner would estimate at fold time; the bias
    # reads only the decisions' own estimates, so both learners measure the same -0.3.
    biases = []
    for prior_weight in (2.0, 50.0):
        learner = Learner(learning(prior_weight=prior_weight), clock=still(5.0))
        learner.learn(decided(tax_vectors, 2000))
        biases.append(learner.bias("cheap"))
    assert biases[0] == pytest.approx(-0.3, abs=0.01)
    assert biases[1] == pytest.approx(biases[0], abs=1e-9)
    assert learner.bias("reasoning") == 0.0


def test_outcomes_no_learned_estimate_chose_or_an_escalation_selected_are_not_scored(
    tax_vectors: FloatArray,
) -> None:
    learner = Learner(learning(), clock=still(5.0))
    learner.learn(decided(tax_vectors, 200, acceptable=0.0, estimate=None))  # intent routes
    learner.learn(decided(tax_vectors, 200, "reasoning", 0.0, 0.9, escalated=True))
    assert learner.bias("cheap") == 0.0 and learner.bias("reasoning") == 0.0
    assert learner.stats().remembered == 200  # learned all the same (escalated: weight 0)


def test_recent_decisions_outweigh_old_ones(tax_vectors: FloatArray) -> None:
    learner = Learner(learning(), clock=still(5.0))
    learner.learn(decided(tax_vectors, 3000, acceptable=0.6))  # once too optimistic
    learner.learn(decided(tax_vectors, 3000, acceptable=0.9))  # now right
    assert abs(learner.bias("cheap")) < 0.02


def test_weightier_outcomes_count_for_more(tax_vectors: FloatArray) -> None:
    learner = Learner(learning(), clock=still(5.0))
    learner.learn([*decided(tax_vectors, 100, acceptable=0.9),
                   *(replace(o, weight=3.0) for o in decided(tax_vectors, 100, acceptable=0.5))])
    # 100 outcomes at 0 and 300 outcomes' worth at -0.4, shrunk by 20 of no bias.
    assert learner.bias("cheap") == pytest.approx(-0.4 * 300 / 420, abs=0.01)


async def test_the_bias_survives_a_restart(tmp_path: Path, tax_vectors: FloatArray) -> None:
    path = tmp_path / "learning.sqlite3"
    first = Learner(learning(), path=path, clock=still(5.0))
    await first.start()
    for o in decided(tax_vectors, 300):
        first.observe(o)
    await first.close()
    with sqlite3.connect(path) as db:
        stored = {d for (d,) in db.execute("SELECT decided FROM outcomes")}
    assert stored == {0.9}

    async with started(learning(), path, 5.0) as second:
        assert second.bias("cheap") == pytest.approx(first.bias("cheap"), abs=1e-9)
        assert second.bias("cheap") < -0.2


async def test_outcomes_written_after_the_last_checkpoint_are_scored_at_the_next_start(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    # The process stops (or dies) before its bias is checkpointed again: the rows it wrote
    # carry their decided estimate, and the next start scores them.
    path = tmp_path / "learning.sqlite3"
    settings = learning(max_outcomes=100_000)  # no checkpoint before close
    async with started(settings, path, 5.0) as first:
        for o in decided(tax_vectors, 300):
            first.observe(o)
        await first.drained()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM decision_bias").fetchone() == (0,)
        async with started(settings, path, 5.0) as second:
            assert second.bias("cheap") == pytest.approx(first.bias("cheap"), abs=1e-9)


async def test_an_older_file_migrates_its_rows_undecided_and_drops_the_other_measure(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    path = tmp_path / "learning.sqlite3"
    with sqlite3.connect(path) as db:  # as the fifth round wrote it
        db.execute("CREATE TABLE outcomes (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, "
                   "tier TEXT NOT NULL, acceptable REAL NOT NULL, weight REAL NOT NULL, "
                   "at_s REAL NOT NULL, tenant TEXT, source TEXT NOT NULL, vector BLOB NOT NULL,"
                   " escalated INTEGER NOT NULL DEFAULT 0)")
        db.execute("CREATE TABLE bias (tier TEXT PRIMARY KEY, error REAL NOT NULL, "
                   "count REAL NOT NULL)")
        db.execute("INSERT INTO bias VALUES ('cheap', -30.0, 100.0)")  # the fold-time measure
        db.executemany(
            "INSERT INTO outcomes (scope, tier, acceptable, weight, at_s, tenant, source, vector)"
            " VALUES ('', 'cheap', 0.0, 1.0, 5.0, NULL, 'feedback', ?)",
            [(v.astype(np.float16).tobytes(),) for v in tax_vectors])
    async with started(learning(), path, 5.0) as learner:
        assert learner.stats().remembered == len(tax_vectors)
        assert learner.bias("cheap") == 0.0  # neither the old table nor undecided rows count
        learner.observe(decided(tax_vectors, 1, acceptable=0.0)[0])
        await learner.drained()
        assert learner.bias("cheap") == pytest.approx(-0.9 / 21)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT decided FROM outcomes ORDER BY id").fetchall()
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert rows == [(None,)] * len(tax_vectors) + [(0.9,)]
    assert "bias" not in tables and "decision_bias" in tables


async def test_a_checkpoint_torn_between_its_tiers_scores_no_outcome_twice(
    tmp_path: Path, tax_vectors: FloatArray,
) -> None:
    # Each tier's row of the checkpoint commits on its own (the file is in autocommit): a
    # process that dies between them leaves one tier's row newer than the other's. Each tier
    # is then restored from its own row, rescoring only the outcomes after it.
    path = tmp_path / "learning.sqlite3"
    settings = learning(max_outcomes=100_000)  # checkpoints at close only
    both = [*decided(tax_vectors, 200), *decided(tax_vectors, 200, "reasoning", 1.0, 0.8)]
    for run in range(2):
        learner = Learner(settings, path=path, clock=still(5.0))
        await learner.start()
        for o in both:
            learner.observe(o)
        await learner.close()
        if run == 0:
            with sqlite3.connect(path) as db:
                older = db.execute("SELECT error, count, through_id FROM decision_bias "
                                   "WHERE tier = 'reasoning'").fetchone()
    expected = {tier: learner.bias(tier) for tier in TIERS}
    with sqlite3.connect(path) as db:  # died after the cheap tier's row of the second one
        db.execute("UPDATE decision_bias SET error = ?, count = ?, through_id = ? "
                   "WHERE tier = 'reasoning'", older)
    async with started(settings, path, 5.0) as restarted:
        for tier in TIERS:
            assert restarted.bias(tier) == pytest.approx(expected[tier], abs=1e-9), tier
