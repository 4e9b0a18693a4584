"""Tests for gateway/routing/signals.py: decisions, escalations, retries, failures, answers and
feedback in SQLite."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.core.answer import Attempt, Deployment
from gateway.core.config import ModelSettings, ProviderSettings
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.routing.escalation import EscalationKind, EscalationReason
from gateway.routing.json_schema import validate
from gateway.routing.policy import Decision, LearnedNote, Reason, RouteScore, TierEstimate
from gateway.routing.signals import (
    SCHEMA_VERSION,
    Answered,
    Signal,
    SignalKind,
    SignalRow,
    SignalStore,
    VectorRow,
    prompt_key,
)

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


async def test_numpy_scores_are_written_as_numbers(tmp_path: Path) -> None:
    """The router computes its scores with numpy; a detail keeps them as JSON numbers."""
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m")
    decision = replace(DECISION, confidence=np.float64(0.9), score=np.float32(0.5),
                       ranked=(RouteScore("code", "reasoning", np.float64(0.7), 0.6, 0.9),))
    try:
        store.decision("req_1", decision, "fix my code", None)
        assert await store.flush() == 1
    finally:
        await store.close()
    (detail,), = rows(path, "SELECT detail FROM signals")
    stored = json.loads(str(detail))
    assert (stored["confidence"], stored["score"], stored["ranked"]) == (0.9, 0.5, [["code", 0.7]])


def make_version_1(path: Path) -> None:
    """A file as version 1 wrote it: vectors WITHOUT ROWID; an answer at ts 1 and its vector
    (``np.arange(4)`` for "fix my code", model "m")."""
    key = prompt_key("fix my code")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE signals (id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT "
                   "NOT NULL, request_id TEXT NOT NULL, route TEXT, tier TEXT, deployment TEXT, "
                   "vector_key BLOB, detail TEXT NOT NULL DEFAULT '{}')")
        db.execute("CREATE INDEX signals_request ON signals (request_id)")
        db.execute("CREATE INDEX signals_kind_ts ON signals (kind, ts)")
        db.execute("CREATE TABLE vectors (key BLOB NOT NULL, model TEXT NOT NULL, dim INTEGER "
                   "NOT NULL, vector BLOB NOT NULL, ts REAL NOT NULL, PRIMARY KEY (key, model)"
                   ") WITHOUT ROWID")
        db.execute("INSERT INTO signals (ts, kind, request_id, route, tier, vector_key, detail) "
                   "VALUES (1.0, 'answer', 'req_old', 'code', 'cheap', ?, ?)",
                   (key, json.dumps({"tenant": "acme", "cached": False})))
        db.execute("INSERT INTO vectors VALUES (?, 'm', 4, ?, 1.0)",
                   (key, np.arange(4, dtype=np.float32).tobytes()))
        db.execute("PRAGMA user_version = 1")


async def test_a_version_1_file_keeps_its_signals_and_vectors_in_the_rowid_table(
    tmp_path: Path
) -> None:
    """Version 1 kept vectors in a WITHOUT ROWID table; opening such a file moves them into
    version 2's rowid table, and feedback still finds an old answer with its vector."""
    path = tmp_path / "signals.sqlite3"
    vector = np.arange(4, dtype=np.float32)
    key = prompt_key("fix my code")
    make_version_1(path)
    store = await SignalStore.open(path, model="m")
    try:
        found = await store.find_answer("req_old", "acme")
        store.decision("req_new", DECISION, "fix my code", vector)
        store.decision("req_other", DECISION, "something else", vector)
        assert await store.flush() == 2
    finally:
        await store.close()
    assert found is not None and found.tier == "cheap" and found.vector is not None
    assert np.array_equal(found.vector, vector)
    (sql,), = rows(path, "SELECT sql FROM sqlite_master WHERE name = 'vectors'")
    assert "WITHOUT ROWID" not in str(sql)
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT key FROM vectors ORDER BY rowid") == [
        (key,), (prompt_key("something else"),)]


async def test_a_routed_answer_hands_the_sink_its_vector_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision queued the prompt's vector; the answer of the same request refers to it by
    key and does not queue a second copy. A later batch carries it again (first wins there)."""
    store = await SignalStore.open(tmp_path / "s.sqlite3", model="m")
    real_write = store._sink.write
    batches: list[list[bytes]] = []

    async def write(signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        batches.append([row[0] for row in vectors])
        await real_write(signals, vectors)

    monkeypatch.setattr(store._sink, "write", write)
    vector = np.arange(4, dtype=np.float32)
    key = prompt_key("fix my code")
    try:
        store.decision("req_1", DECISION, "fix my code", vector)
        store.answer(Answered("req_1", "acme", "reasoning", "code", vector, key))
        store.decision("req_2", DECISION, "something else", vector)
        assert await store.flush() == 3
        store.answer(Answered("req_3", "acme", "reasoning", "code", vector, key))
        assert await store.flush() == 1
    finally:
        await store.close()
    assert batches == [[key, prompt_key("something else")], [key]]
    assert rows(tmp_path / "s.sqlite3", "SELECT count(*) FROM vectors") == [(2,)]


def fail_first_write(store: SignalStore, monkeypatch: pytest.MonkeyPatch,
                     meanwhile: Callable[[], object] = lambda: None) -> None:
    """The store's first write runs ``meanwhile``, then fails as a full disk does; the later
    ones are written."""
    real_write = store._sink.write
    failed = False

    async def write(signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        nonlocal failed
        if not failed:
            failed = True
            meanwhile()
            raise sqlite3.OperationalError("disk I/O error")
        await real_write(signals, vectors)

    monkeypatch.setattr(store._sink, "write", write)


async def test_a_failed_batch_leaves_the_vectors_of_the_signals_still_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch carries every queued vector; when its write fails, the vectors that later
    batches' signals refer to are written with those signals."""
    path = tmp_path / "s.sqlite3"
    store = await SignalStore.open(path, model="m", batch=1)
    fail_first_write(store, monkeypatch)
    vector = np.arange(4, dtype=np.float32)
    try:
        store.decision("req_1", DECISION, "fix my code", vector)
        store.decision("req_2", DECISION, "something else", vector + 1)
        assert await store.flush() == 1
    finally:
        await store.close()
    assert store.dropped == 1
    assert rows(path, "SELECT request_id FROM signals") == [("req_2",)]
    stored = dict(rows(path, "SELECT key, vector FROM vectors"))
    assert np.array_equal(np.frombuffer(stored[prompt_key("something else")], dtype=np.float32),
                          vector + 1)


async def test_a_failed_batch_s_vector_outranks_its_key_queued_alone_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a batch that carries a prompt's vector fails, a signal with that prompt's key alone
    (no embedder answered) is queued: the vector goes back into the queue with the later use,
    not lost under the key-only row."""
    path = tmp_path / "s.sqlite3"
    store = await SignalStore.open(path, model="m", batch=1)
    # The key alone, queued while the batch carrying its vector is written.
    fail_first_write(store, monkeypatch,
                     lambda: store.decision("req_3", DECISION, "fix my code", None))
    vector = np.arange(4, dtype=np.float32)
    try:
        store.decision("req_1", DECISION, "fix my code", vector)
        store.decision("req_2", DECISION, "something else", vector + 1)
        await store.flush()
    finally:
        await store.close()
    stored = dict(rows(path, "SELECT key, vector FROM vectors"))
    assert np.array_equal(np.frombuffer(stored[prompt_key("fix my code")], dtype=np.float32),
                          vector)


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


async def test_an_escalation_quoting_a_lone_surrogate_of_the_answer_is_recorded(
    tmp_path: Path,
) -> None:
    """A schema check's message quotes the answer's JSON, which may hold a lone surrogate
    (``"\\ud800"`` decodes to one); recording it must not fail the request."""
    answer = json.loads('{"\\ud800": 1}')
    problem = validate(answer, {"type": "object", "additionalProperties": {"type": "string"}})
    assert problem is not None and "\ud800" in problem
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path)
    try:
        reason = EscalationReason(EscalationKind.SCHEMA_MISMATCH, problem)
        assert store.escalation("req_1", DECISION, "cheap", "reasoning", reason)
        assert await store.flush() == 1
    finally:
        await store.close()
    ((detail,),) = rows(path, "SELECT detail FROM signals")
    assert json.loads(str(detail))["detail"] == problem


async def test_numpy_estimates_are_written_as_numbers_and_read_back(tmp_path: Path) -> None:
    """Estimates computed with numpy are numpy scalars: written as numbers, as json.dumps
    wrote a float64, so an answer's ``decided`` is read back (a string would be dropped)."""
    store = await SignalStore.open(tmp_path / "signals.sqlite3", model="m")
    note = LearnedNote((("cheap", TierEstimate(np.float64(0.3), 2.5, 4)),), "cheap")
    try:
        assert store.decision("req_1", replace(DECISION, learned=note), "tax?", None)
        assert store.answer(Answered("req_1", "acme", "cheap", "code",
                                     decided=(("cheap", np.float64(0.8125)),)))
        found = await store.find_answer("req_1", "acme")
    finally:
        await store.close()
    assert found is not None and found.decided == (("cheap", 0.8125),)
    ((detail,),) = rows(tmp_path / "signals.sqlite3",
                        "SELECT detail FROM signals WHERE kind = 'decision'")
    assert json.loads(str(detail))["learned"]["p"] == {"cheap": 0.3}


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = await SignalStore.open(tmp_path / "s.sqlite3", max_pending=2)
    try:
        results = [store.decision(f"r{i}", DECISION, "", None) for i in range(3)]
        assert results == [True, True, False] and store.dropped == 1
    finally:
        await store.close()
    assert not store.decision("late", DECISION, "", None)


async def test_answers_retries_and_feedback_are_written_and_an_answer_is_read_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m")
    vector = np.arange(4, dtype=np.float32)
    answered = Answered("req_1", "acme", "reasoning", "code", vector, prompt_key("fix it"),
                        failed=(("cheap", "empty_answer"),), at_s=1234.5)
    try:
        assert store.answer(answered)
        assert store.client_retry(answered, "req_2", 0.98765)
        assert store.feedback(answered, 0.25, "close, not quite")
        found = await store.find_answer("req_1", "acme")  # queued ones are written first
        assert await store.find_answer("req_1", "globex") is None
        assert await store.find_answer("req_9", "acme") is None
    finally:
        await store.close()
    assert found is not None and found.vector is not None
    assert (found.request_id, found.tenant, found.tier, found.route, found.failed) == (
        "req_1", "acme", "reasoning", "code", (("cheap", "empty_answer"),))
    assert np.array_equal(found.vector, vector) and found.at_s == 1234.5
    kinds = rows(path, "SELECT kind, request_id, tier, detail FROM signals ORDER BY id")
    assert [(k, r, t) for k, r, t, _ in kinds] == [
        ("answer", "req_1", "reasoning"), ("client_retry", "req_1", "reasoning"),
        ("feedback", "req_1", "reasoning")]
    assert json.loads(str(kinds[1][3])) == {"tenant": "acme", "retried_by": "req_2",
                                            "similarity": 0.9877}
    assert json.loads(str(kinds[2][3]))["score"] == 0.25


async def test_a_learned_decision_records_its_estimates_and_the_intent_tier(
    tmp_path: Path,
) -> None:
    path = tmp_path / "signals.sqlite3"
    note = LearnedNote((("cheap", TierEstimate(0.3, 2.5, 4)),
                        ("reasoning", TierEstimate(0.95, 1.0, 2))), "cheap")
    store = await SignalStore.open(path)
    try:
        assert store.decision("req_1", replace(DECISION, learned=note), "tax?", None)
    finally:
        await store.close()
    ((detail,),) = rows(path, "SELECT detail FROM signals")
    assert json.loads(str(detail))["learned"] == {
        "prior_tier": "cheap", "explored": False, "outcomes": 6,
        "p": {"cheap": 0.3, "reasoning": 0.95}}


async def test_signals_that_arrive_during_a_write_wait_for_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer takes what is queued when it wakes, so that under steady load it writes a few
    full batches, not one transaction after another of the few signals that came meanwhile."""
    store = await SignalStore.open(tmp_path / "s.sqlite3", batch=10, flush_interval_s=3600)
    sink = store._sink
    real_write = sink.write
    sizes: list[int] = []
    ten, twenty = asyncio.Event(), asyncio.Event()

    async def write(signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        sizes.append(len(signals))
        if len(sizes) == 1:
            for i in range(100, 103):  # three requests finish while the first batch is written
                store.decision(f"r{i}", DECISION, "", None)
        await real_write(signals, vectors)
        ten.set()
        if sum(sizes) >= 20:
            twenty.set()

    monkeypatch.setattr(sink, "write", write)
    store.start()
    try:
        for i in range(10):
            store.decision(f"r{i}", DECISION, "", None)
        await asyncio.wait_for(ten.wait(), 10)
        for i in range(10, 17):  # with the three, a full batch again
            store.decision(f"r{i}", DECISION, "", None)
        await asyncio.wait_for(twenty.wait(), 10)
        assert sizes == [10, 10]
    finally:
        await store.close()
    assert rows(tmp_path / "s.sqlite3", "SELECT count(*) FROM signals") == [(20,)]


DAY_S = 86_400.0
NOW = 2_000_000_000.0
"""The injected clock's time in the retention tests: signals carry their own ts."""


def decision_at(store: SignalStore, request_id: str, text: str, ts: float,
                vector: np.ndarray | None) -> None:
    assert store.record(Signal(SignalKind.DECISION, request_id, "code", "cheap",
                               vector_key=prompt_key(text), ts=ts), vector)


async def asked_again_without_the_vector(store: SignalStore, vector: np.ndarray) -> None:
    """"asked again" asked 40 days ago with ``vector`` (written), then an hour ago while no
    embedder answered: that decision, queued, carries the prompt's key alone."""
    decision_at(store, "req_first", "asked again", NOW - 40 * DAY_S, vector)
    assert await store.flush() == 1
    decision_at(store, "req_again", "asked again", NOW - 3600, None)


async def test_signals_older_than_the_retention_go_with_vectors_no_kept_signal_uses(
    tmp_path: Path,
) -> None:
    """A prompt asked 40 days ago and again an hour ago keeps its vector (its ts is its last
    use), and feedback still finds the recent answer with it; a prompt only asked 40 days ago
    goes, vector and all."""
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m", retention_s=30 * DAY_S, clock=lambda: NOW)
    old, again = np.ones(4, dtype=np.float32), np.arange(4, dtype=np.float32)
    try:
        decision_at(store, "req_old", "old prompt", NOW - 40 * DAY_S, old)
        decision_at(store, "req_first", "asked again", NOW - 40 * DAY_S, again)
        assert store.answer(Answered("req_first", "acme", "cheap", "code", again,
                                     prompt_key("asked again"), at_s=NOW - 40 * DAY_S))
        assert await store.flush() == 3  # one batch, then the later ones in another
        decision_at(store, "req_again", "asked again", NOW - 3600, again)
        assert store.answer(Answered("req_again", "acme", "cheap", "code", again,
                                     prompt_key("asked again"), at_s=NOW - 3600))
        assert await store.flush() == 2
        assert await store.sweep() == 3
        found = await store.find_answer("req_again", "acme")
        assert await store.find_answer("req_first", "acme") is None
    finally:
        await store.close()
    assert found is not None and found.vector is not None
    assert np.array_equal(found.vector, again)
    assert rows(path, "SELECT request_id FROM signals ORDER BY id") == [
        ("req_again",), ("req_again",)]
    assert rows(path, "SELECT key, ts FROM vectors") == [(prompt_key("asked again"), NOW - 3600)]


async def test_feedback_keeps_its_answers_vector_after_the_answer_expires(
    tmp_path: Path,
) -> None:
    """Feedback carries the answer's vector (read back with the answer), so the vector lives as
    long as the feedback does."""
    path = tmp_path / "signals.sqlite3"
    now = [time.time()]  # feedback is stamped with the time it came
    store = await SignalStore.open(path, model="m", retention_s=30 * DAY_S,
                                   clock=lambda: now[0])
    vector = np.arange(4, dtype=np.float32)
    try:
        assert store.answer(Answered("req_1", "acme", "cheap", "code", vector,
                                     prompt_key("fix it"), at_s=now[0] - 20 * DAY_S))
        assert await store.flush() == 1
        answered = await store.find_answer("req_1", "acme")
        assert answered is not None and answered.vector is not None
        assert store.feedback(answered, 1.0, None)
        await store.flush()
        now[0] += 15 * DAY_S  # the answer is 35 days old, the feedback 15
        assert await store.sweep() == 1
    finally:
        await store.close()
    ((kind, ts),) = rows(path, "SELECT kind, ts FROM signals")
    assert kind == "feedback"
    assert rows(path, "SELECT key, ts FROM vectors") == [(prompt_key("fix it"), ts)]


async def test_a_retention_of_0_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m", retention_s=0, clock=lambda: NOW)
    try:
        decision_at(store, "req_old", "old prompt", 1.0, np.ones(4, dtype=np.float32))
        assert await store.flush() == 1
        assert await store.sweep() == 0
    finally:
        await store.close()
    assert rows(path, "SELECT count(*) FROM signals") == [(1,)]
    assert rows(path, "SELECT count(*) FROM vectors") == [(1,)]


async def test_a_sweep_deletes_in_bounded_transactions_and_writes_queued_signals_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 expired signals, 10 a transaction: three transactions, every expired row gone; the
    signals that came during the first are written before the second."""
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m", batch=4, retention_s=30 * DAY_S,
                                   sweep_batch=10, clock=lambda: NOW)
    sink = store._sink
    real_expire, real_write = sink.expire, sink.write
    calls: list[str] = []

    async def expire(before: float, limit: int) -> int:
        deleted = await real_expire(before, limit)
        calls.append(f"expire {deleted}")
        if len(calls) == 1:
            for i in range(4):
                decision_at(store, f"req_new_{i}", "new", NOW, None)
        return deleted

    async def write(signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        calls.append(f"write {len(signals)}")
        await real_write(signals, vectors)

    try:
        for i in range(25):
            decision_at(store, f"req_{i}", f"prompt {i % 5}", NOW - 31 * DAY_S,
                        np.full(4, i, dtype=np.float32))
        decision_at(store, "req_kept", "prompt 0", NOW - 29 * DAY_S, np.zeros(4, np.float32))
        assert await store.flush() == 26
        monkeypatch.setattr(sink, "expire", expire)
        monkeypatch.setattr(sink, "write", write)
        assert await store.sweep() == 25
    finally:
        await store.close()
    assert calls == ["expire 10", "write 4", "expire 10", "expire 5"]
    assert rows(path, "SELECT request_id FROM signals ORDER BY id") == [
        ("req_kept",), *((f"req_new_{i}",) for i in range(4))]
    assert rows(path, "SELECT key FROM vectors") == [(prompt_key("prompt 0"),)]


async def test_the_writer_task_sweeps_at_most_once_an_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "signals.sqlite3"
    now = [NOW]
    store = await SignalStore.open(path, batch=1, flush_interval_s=3600,
                                   retention_s=30 * DAY_S, sweep_interval_s=60,
                                   clock=lambda: now[0])
    sink = store._sink
    real_expire, real_write = sink.expire, sink.write
    expired: list[int] = []
    writes = asyncio.Queue[int]()

    async def expire(before: float, limit: int) -> int:
        expired.append(await real_expire(before, limit))
        return expired[-1]

    async def write(signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        await real_write(signals, vectors)
        writes.put_nowait(len(signals))

    monkeypatch.setattr(sink, "expire", expire)
    monkeypatch.setattr(sink, "write", write)
    try:
        decision_at(store, "req_1", "a", NOW - 40 * DAY_S, None)
        store.start()  # a full batch wakes the writer: it writes, then sweeps
        assert await asyncio.wait_for(writes.get(), 10) == 1
        decision_at(store, "req_2", "b", NOW - 40 * DAY_S, None)
        assert await asyncio.wait_for(writes.get(), 10) == 1
        now[0] += 61  # the next write's round is due to sweep again
        decision_at(store, "req_3", "c", NOW, None)
        assert await asyncio.wait_for(writes.get(), 10) == 1
    finally:
        await store.close()
    # The first sweep came after req_1's write; none after req_2's (within the minute); the
    # third after req_3's. The close (no sweep) leaves nothing behind.
    assert expired == [1, 1]
    assert rows(path, "SELECT request_id FROM signals") == [("req_3",)]


async def make_version_2(path: Path) -> None:
    """A file as version 2 left it, a vector's ts its first write: "asked again" asked 40 days
    ago with its vector, and a minute ago with its key alone."""
    store = await SignalStore.open(path, model="m")
    try:
        decision_at(store, "req_old", "asked again", NOW - 40 * DAY_S,
                    np.arange(4, dtype=np.float32))
        decision_at(store, "req_new", "asked again", NOW - 60, None)
        assert await store.flush() == 2
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE vectors SET ts = ?", (NOW - 40 * DAY_S,))
        db.execute("PRAGMA user_version = 2")


async def test_a_version_2_file_keeps_vectors_that_recent_signals_use(tmp_path: Path) -> None:
    """Version 2 kept a vector's first write as its ts; opening such a file sets it to the
    latest signal that refers to it, so the sweep does not take a vector still in use."""
    path = tmp_path / "signals.sqlite3"
    await make_version_2(path)
    store = await SignalStore.open(path, model="m", retention_s=30 * DAY_S, clock=lambda: NOW)
    try:
        assert await store.sweep() == 1
    finally:
        await store.close()
    assert rows(path, "SELECT ts FROM vectors") == [(NOW - 60,)]
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_1_file_goes_to_version_3_in_one_open(tmp_path: Path) -> None:
    """Both steps: the rowid table, then each vector's ts set to its last use."""
    path = tmp_path / "signals.sqlite3"
    make_version_1(path)
    key = prompt_key("fix my code")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO signals (ts, kind, request_id, vector_key) "
                   "VALUES (?, 'decision', 'req_new', ?)", (NOW - 60, key))
    store = await SignalStore.open(path, model="m")
    await store.close()
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT key, ts FROM vectors") == [(key, NOW - 60)]
    (sql,), = rows(path, "SELECT sql FROM sqlite_master WHERE name = 'vectors'")
    assert "WITHOUT ROWID" not in str(sql)


async def test_a_migration_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """A failure after both steps (made here by a table in an index's place) rolls them back."""
    path = tmp_path / "signals.sqlite3"
    make_version_1(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX signals_kind_ts")
        db.execute("CREATE TABLE signals_kind_ts (x)")
    before = rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with pytest.raises(sqlite3.OperationalError, match="signals_kind_ts"):
        await SignalStore.open(path, model="m")
    assert rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before
    assert rows(path, "PRAGMA user_version") == [(1,)]
    assert rows(path, "SELECT ts FROM vectors") == [(1.0,)]


async def test_a_file_of_a_newer_gateway_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "signals.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        await SignalStore.open(path, model="m")
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert rows(path, "SELECT name FROM sqlite_master") == []


async def test_a_signal_without_its_vector_keeps_the_stored_one_while_it_is_kept(
    tmp_path: Path,
) -> None:
    """A prompt asked 40 days ago, then again an hour ago while no embedder answered: the
    recent signals carry its key but no vector. The stored vector is theirs (the same text)
    and stays while they do, so feedback on the recent answer still finds it."""
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m", retention_s=30 * DAY_S, clock=lambda: NOW)
    vector, key = np.arange(4, dtype=np.float32), prompt_key("asked again")
    try:
        await asked_again_without_the_vector(store, vector)
        assert store.answer(Answered("req_again", "acme", "cheap", "code", None, key,
                                     at_s=NOW - 3600))
        assert await store.flush() == 2
        assert await store.sweep() == 1
        found = await store.find_answer("req_again", "acme")
    finally:
        await store.close()
    assert found is not None and found.vector is not None
    assert np.array_equal(found.vector, vector)
    assert rows(path, "SELECT key, ts FROM vectors") == [(key, NOW - 3600)]


async def test_a_vector_queued_after_a_signal_without_it_is_written(tmp_path: Path) -> None:
    """In one batch, a signal without the vector, then one with it: the vector is stored."""
    path = tmp_path / "signals.sqlite3"
    store = await SignalStore.open(path, model="m")
    try:
        decision_at(store, "req_1", "asked", NOW - 60, None)
        decision_at(store, "req_2", "asked", NOW - 120, np.ones(4, dtype=np.float32))
        assert await store.flush() == 2
    finally:
        await store.close()
    assert rows(path, "SELECT key, dim, ts FROM vectors") == [(prompt_key("asked"), 4, NOW - 60)]
