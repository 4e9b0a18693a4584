"""Tests for gateway/routing/pg_signals.py: the signals of several replicas in one PostgreSQL."""

from __future__ import annotations

import json

import numpy as np

from gateway.core.postgres import Database
from gateway.routing.pg_signals import PgSignalSink
from gateway.routing.signals import Answered, SignalStore, prompt_key
from tests.test_routing_signals import DECISION

pytest_plugins = ["tests.postgres_fixtures"]


async def test_two_replicas_write_their_signals_and_one_vector_per_prompt(
    database: Database,
) -> None:
    vector = np.arange(4, dtype=np.float32)
    replicas = [SignalStore(PgSignalSink(database), model="m") for _ in range(2)]
    for i, store in enumerate(replicas):
        assert store.decision(f"req_{i}", DECISION, "fix my code", vector)
        assert await store.flush() == 1
        await store.close()
    rows = await database.pool.fetch(
        "SELECT kind, request_id, route, tier, vector_key, detail FROM signals ORDER BY id"
    )
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("decision", "req_0", "code", "reasoning"), ("decision", "req_1", "code", "reasoning")]
    assert bytes(rows[0][4]) == prompt_key("fix my code")
    assert json.loads(rows[1][5])["reason"] == "confident"
    vectors = await database.pool.fetch("SELECT key, model, dim, vector FROM signal_vectors")
    assert len(vectors) == 1  # the second replica's copy of the same prompt is kept out
    key, model, dim, blob = vectors[0]
    assert bytes(key) == prompt_key("fix my code") and (model, dim) == ("m", 4)
    assert np.array_equal(np.frombuffer(blob, dtype=np.float32), vector)


async def test_an_answer_and_its_feedback_are_read_back_from_another_replica(
    database: Database,
) -> None:
    vector = np.arange(4, dtype=np.float32)
    answered = Answered("req_1", "acme", "reasoning", "code", vector, prompt_key("fix it"),
                        failed=(("cheap", "empty_answer"),), at_s=1234.5,
                        decided=(("cheap", 0.8125),))
    writer = SignalStore(PgSignalSink(database), model="m")
    assert writer.answer(answered) and writer.feedback(answered, 0.0, None)
    await writer.close()
    reader = SignalStore(PgSignalSink(database), model="m")  # feedback may reach any replica
    try:
        found = await reader.find_answer("req_1", "acme")
        assert await reader.find_answer("req_1", "globex") is None  # another tenant's id
        assert await reader.rated("req_1", "acme") and not await reader.rated("req_1", "globex")
    finally:
        await reader.close()
    assert found is not None and found.vector is not None
    assert (found.tenant, found.tier, found.route, found.failed, found.at_s) == (
        "acme", "reasoning", "code", (("cheap", "empty_answer"),), 1234.5)
    # The estimate the learner scores the cheap tier's outcome against, in the detail JSON.
    assert found.decided == (("cheap", 0.8125),) and found.decided_for("reasoning") is None
    assert np.array_equal(found.vector, vector)
