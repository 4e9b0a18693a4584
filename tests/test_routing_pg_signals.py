"""Tests for gateway/routing/pg_signals.py: the signals of several replicas in one PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from gateway.core.postgres import Database, migrations
from gateway.routing.pg_signals import PgSignalSink
from gateway.routing.signals import Answered, SignalStore, prompt_key
from tests.test_routing_signals import (
    DAY_S,
    DECISION,
    NOW,
    asked_again_without_the_vector,
    decision_at,
)

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


async def test_replicas_sweeping_at_once_delete_each_expired_signal_once(
    database: Database,
) -> None:
    """Two replicas sweep the same tables at once, 7 rows a transaction: every expired signal
    goes exactly once, the recent ones and the vector a recent signal uses stay."""
    writer = SignalStore(PgSignalSink(database), model="m")
    for i in range(60):
        decision_at(writer, f"req_{i}", f"prompt {i % 6}", NOW - 31 * DAY_S,
                    np.full(4, i, dtype=np.float32))
    decision_at(writer, "req_kept", "prompt 0", NOW - 3600, np.zeros(4, dtype=np.float32))
    assert await writer.flush() == 61
    await writer.close()
    replicas = [SignalStore(PgSignalSink(database), model="m", retention_s=30 * DAY_S,
                            sweep_batch=7, clock=lambda: NOW) for _ in range(2)]
    try:
        deleted = await asyncio.gather(*(r.sweep() for r in replicas))
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(deleted) == 60
    assert [r[0] for r in await database.pool.fetch("SELECT request_id FROM signals")] == [
        "req_kept"]
    vectors = await database.pool.fetch("SELECT key, ts FROM signal_vectors")
    assert [(bytes(k), ts) for k, ts in vectors] == [(prompt_key("prompt 0"), NOW - 3600)]


async def test_a_vector_written_again_keeps_its_latest_use_and_feedback_finds_it(
    database: Database,
) -> None:
    vector = np.arange(4, dtype=np.float32)
    key = prompt_key("asked again")
    store = SignalStore(PgSignalSink(database), model="m", retention_s=30 * DAY_S,
                        clock=lambda: NOW)
    try:
        decision_at(store, "req_first", "asked again", NOW - 40 * DAY_S, vector)
        assert await store.flush() == 1
        assert store.answer(Answered("req_again", "acme", "cheap", "code", vector, key,
                                     at_s=NOW - 3600))
        decision_at(store, "req_older", "asked again", NOW - 50 * DAY_S, vector)
        assert await store.flush() == 2  # the later ts stands, whatever the order
        assert await store.sweep() == 2
        found = await store.find_answer("req_again", "acme")
    finally:
        await store.close()
    assert found is not None and found.vector is not None
    assert np.array_equal(found.vector, vector)
    assert await database.pool.fetchval("SELECT ts FROM signal_vectors") == NOW - 3600


async def test_the_migration_sets_stored_vectors_ts_to_their_last_use(
    database: Database,
) -> None:
    """Migration 4 on vectors stored with their first write's ts (as before it)."""
    key = prompt_key("asked again")
    await database.pool.execute(
        "INSERT INTO signals (ts, kind, request_id, vector_key) VALUES "
        "($1, 'decision', 'r1', $3), ($2, 'answer', 'r2', $3), ($2, 'decision', 'r3', NULL)",
        NOW - 40 * DAY_S, NOW - 60, key)
    await database.pool.execute(
        "INSERT INTO signal_vectors VALUES ($1, 'm', 1, '\\x00000000', $2), "
        "($3, 'm', 1, '\\x00000000', $2)", key, NOW - 40 * DAY_S, prompt_key("unused"))
    (migration,) = [m for m in migrations() if m.name == "signal_vectors_last_use"]
    await database.pool.execute(migration.sql)
    rows = await database.pool.fetch("SELECT key, ts FROM signal_vectors ORDER BY ts")
    assert [(bytes(k), ts) for k, ts in rows] == [
        (prompt_key("unused"), NOW - 40 * DAY_S), (key, NOW - 60)]


async def test_a_signal_without_its_vector_moves_the_stored_ones_last_use(
    database: Database,
) -> None:
    """Written while no embedder answered, a signal carries its prompt's key only: the vector
    another replica stored for that key stays while the signal does."""
    vector, key = np.arange(4, dtype=np.float32), prompt_key("asked again")
    store = SignalStore(PgSignalSink(database), model="m", retention_s=30 * DAY_S,
                        clock=lambda: NOW)
    try:
        await asked_again_without_the_vector(store, vector)
        assert await store.flush() == 1
        assert await store.sweep() == 1
    finally:
        await store.close()
    rows = await database.pool.fetch("SELECT key, ts FROM signal_vectors")
    assert [(bytes(k), ts) for k, ts in rows] == [(key, NOW - 3600)]
