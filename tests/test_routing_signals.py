"""Tests for gateway/routing/signals.py: decisions, escalations, retries and failures in SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from gateway.core.answer import Attempt, Deployment
from gateway.core.config import ModelSettings, ProviderSettings
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.routing.escalation import EscalationKind, EscalationReason
from gateway.routing.policy import Decision, Reason, RouteScore
from gateway.routing.signals import SignalStore, prompt_key

DECISION = Decision("code", "reasoning", Reason.CONFIDENT, "confidence 0.9 >= 0.8",
                    confidence=0.9, score=0.7, margin=0.2,
                    ranked=(RouteScore("code", "reasoning", 0.7, 0.6, 0.9),))


def deployment(name: str) -> Deployment:
    return Deployment(ModelSettings(name, "p", name, "cheap"), ProviderSettings("p", "demo", ""))


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_a_decision_and_its_vector_are_written(tmp_path: Path) -> None:
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m")
    vector = np.arange(4, dtype=np.float32)
    try:
        assert store.decision("req_1", DECISION, "fix my code", vector)
        assert store.decision("req_2", DECISION, "fix my code", vector)
        assert await store.flush() == 2
    finally:
        await store.close()
    signals = rows(path, "SELECT kind, request_id, route, tier, vector_key, detail FROM signals")
    assert [(k, r, ro, t) for k, r, ro, t, _, _ in signals] == [
        ("decision", "req_1", "code", "reasoning"), ("decision", "req_2", "code", "reasoning")]
    assert signals[0][4] == prompt_key("fix my code")
    assert json.loads(str(signals[0][5]))["reason"] == "confident"
    (key, model, dim, blob), = rows(path, "SELECT key, model, dim, vector FROM vectors")
    assert key == prompt_key("fix my code") and model == "m" and dim == 4
    assert isinstance(blob, bytes)
    assert np.array_equal(np.frombuffer(blob, dtype=np.float32), vector)
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_escalations_retries_and_failures_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path)
    failure = UpstreamFailure(FailureKind.TIMEOUT, "no answer in 60 s")
    attempts = [Attempt(deployment("a"), failure), Attempt(deployment("b"), None)]
    store.start()
    assert store.attempts("req_1", "code", "cheap", attempts) == 2
    reason = EscalationReason(EscalationKind.INVALID_JSON, "not JSON")
    assert store.escalation("req_1", DECISION, "cheap", "reasoning", reason, "p/b")
    await store.close()  # writes what is still queued
    kinds = rows(path, "SELECT kind, deployment, detail FROM signals ORDER BY id")
    assert [(k, d) for k, d, _ in kinds] == [
        ("provider_failure", "p/a"), ("retry", "p/b"), ("escalation", "p/b")]
    assert json.loads(str(kinds[0][2]))["kind"] == "timeout"
    assert json.loads(str(kinds[2][2])) == {"kind": "invalid_json", "detail": "not JSON",
                                             "to_tier": "reasoning"}


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = await SignalStore.open(tmp_path / "s.sqlite3", max_pending=2)
    try:
        results = [store.decision(f"r{i}", DECISION, "", None) for i in range(3)]
        assert results == [True, True, False] and store.dropped == 1
    finally:
        await store.close()
    assert not store.decision("late", DECISION, "", None)
