"""The signals that teach the router: decisions, escalations, retries, failures, answers, feedback.

Rows go to their own SQLite file (``<data_dir>/signals.sqlite3``, WAL) through aiosqlite, or,
with a shared database, to its ``signals`` tables (``pg_signals.PgSignalSink``): the writer
hands each batch to a ``SignalSink``. The request path only appends to a bounded in-memory queue
(``record`` never waits and never fails); a background task owned by the routing cleanup
context writes the queue every ``flush_interval_s``, or sooner once ``batch`` rows wait, in one
transaction. A full queue drops rows and counts them (``dropped``). ``close`` writes what is
left.

Each signal refers to the prompt's vector by ``vector_key`` = sha256 of the embedded text; the
vector itself is stored once per key and model in ``vectors`` as a float32 blob, so a learned
policy can later be trained from ``signals JOIN vectors``. A vector's ``ts`` is its last use:
every signal that refers to a vector carries it, and writing it again moves ``ts`` forward; a
signal with the key alone (no embedder answered) moves the stored vector's ``ts`` too.

Signals older than the retention (``retention_s``; 0 keeps them forever) are deleted by the
writer task, at most every ``sweep_interval_s``, ``sweep_batch`` rows per transaction (a full
batch queued meanwhile is written between two), with the vectors of their keys not used since:
a vector goes with the last signal that refers to it, never while a kept one does.

An ``answer`` signal is the request as the client got it (``Answered``: the tenant, the tier that
answered, whether from the cache, which tiers' answers escalation discarded); ``find_answer``
reads it back with its vector, so feedback can refer to a request long after it left memory.
``client_retry`` marks an answer that the same tenant asked again for at once; ``feedback`` is
what ``POST /v1/feedback`` was told. Touches only its database (its sink).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import numpy as np
import orjson

from gateway.core.answer import Attempt
from gateway.core.batch_writer import BatchWriter
from gateway.core.sqlite import open_wal
from gateway.routing.classifier import FloatArray
from gateway.routing.escalation import EscalationReason
from gateway.routing.policy import Decision

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# A rowid table: each row is a 1.5 kB vector, and a WITHOUT ROWID table keeps its rows in the
# key's B-tree, so every insert at a random sha256 key moved whole vectors between pages. As
# version 1 had it, writing one vector cost 25 us at 5,000 stored and 64 us at 100,000, against 8
# and 19 now (bench/RESULTS.md, issue 20).
_VECTORS_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
        key BLOB NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (key, model)
    )"""
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS signals (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        request_id TEXT NOT NULL,
        route TEXT,
        tier TEXT,
        deployment TEXT,
        vector_key BLOB,
        detail TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS signals_request ON signals (request_id)",
    "CREATE INDEX IF NOT EXISTS signals_kind_ts ON signals (kind, ts)",
    _VECTORS_TABLE.format(name="vectors"),
)
_INSERT_SIGNAL = (
    "INSERT INTO signals (ts, kind, request_id, route, tier, deployment, vector_key, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_FIND_ANSWER = (
    "SELECT s.ts, s.route, s.tier, s.vector_key, s.detail, v.vector FROM signals s "
    "LEFT JOIN vectors v ON v.key = s.vector_key AND v.model = ? "
    "WHERE s.kind = 'answer' AND s.request_id = ? ORDER BY s.id DESC LIMIT 50"
)
_RATED = (
    "SELECT 1 FROM signals WHERE kind = 'feedback' AND request_id = ? "
    "AND json_extract(detail, '$.tenant') = ? LIMIT 1"
)
# A vector written again only has its ts moved forward (its last use, what the sweep reads):
# the row is found by the same key lookup that INSERT OR IGNORE made.
_UPSERT_VECTOR = (
    "INSERT INTO vectors (key, model, dim, vector, ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key, model) DO UPDATE SET ts = excluded.ts WHERE excluded.ts > vectors.ts"
)
_LAST_USE = "UPDATE vectors SET ts = ?3 WHERE key = ?1 AND model = ?2 AND ts < ?3"


class SignalKind(enum.StrEnum):
    DECISION = "decision"
    ESCALATION = "escalation"
    RETRY = "retry"
    """A failover attempt after the first (another deployment), not a client's retry."""
    PROVIDER_FAILURE = "provider_failure"
    ANSWER = "answer"
    CLIENT_RETRY = "client_retry"
    FEEDBACK = "feedback"


KINDS = tuple(kind.value for kind in SignalKind)
"""Every kind, for the sweep: it finds expired rows through the (kind, ts) index."""
_EXPIRE_SIGNALS = (
    "DELETE FROM signals WHERE id IN (SELECT id FROM signals WHERE kind IN "
    f"({', '.join('?' * len(KINDS))}) AND ts < ? LIMIT ?) RETURNING vector_key"
)
_EXPIRE_VECTORS = "DELETE FROM vectors WHERE key = ? AND ts < ?"


def _detail_json(detail: Mapping[str, Any]) -> str:
    """A signal's detail as JSON; never fails where json.dumps did not (``record`` must not)."""
    try:
        # orjson: 0.2 us a detail where json.dumps took 3, twice in every routed request. The
        # router's scores may be numpy floats: written as numbers, as json.dumps wrote float64
        # (an answer's ``decided`` written as strings would be dropped when read back).
        return orjson.dumps(dict(detail), default=str,
                            option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        # What orjson refuses and json.dumps writes: a lone surrogate (an escalation's message
        # quotes the answer's JSON, decoded by json.loads), a key that is not a str, an int
        # past 64 bits.
        return json.dumps(dict(detail), default=str)


def prompt_key(text: str) -> bytes:
    """The key of a prompt's vector: sha256 of the embedded text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    request_id: str
    route: str | None = None
    tier: str | None = None
    deployment: str | None = None
    vector_key: bytes | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def row(self) -> tuple[Any, ...]:
        return (self.ts, self.kind.value, self.request_id, self.route, self.tier,
                self.deployment, self.vector_key, _detail_json(self.detail))


@dataclass(frozen=True, slots=True)
class Answered:
    """One request as the client got it, as the learner sees it.

    ``tier`` is the tier whose answer the client got; for a cache hit, the tier the request was
    routed to (the one that would have answered). ``failed`` lists the tiers whose answers
    escalation discarded, with the check each failed (``tier_failed``: every deployment failed).
    ``decided``: the estimate the learned policy chose the routed tier with (tier, estimate;
    the gateway records that tier's only), what the learner scores that tier's outcomes
    against; a tier served for another reason (escalation, every deployment of the chosen one
    down) has none. Empty when no learned estimate chose the tier.
    """

    request_id: str
    tenant: str
    tier: str | None
    route: str | None = None
    vector: FloatArray | None = None
    text_key: bytes | None = None
    failed: tuple[tuple[str, str], ...] = ()
    cached: bool = False
    learned: bool = False
    at_s: float = field(default_factory=time.time)
    decided: tuple[tuple[str, float], ...] = ()

    def detail(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "cached": self.cached, "learned": self.learned,
                "failed": [list(f) for f in self.failed],
                "decided": [[t, p] for t, p in self.decided]}

    def decided_for(self, tier: str) -> float | None:
        """The estimate ``tier`` was chosen with, if a learned estimate chose it."""
        return next((p for t, p in self.decided if t == tier), None)


@dataclass(frozen=True, slots=True)
class PromptVector:
    """A prompt's vector at its use ``ts``; ``vector`` None: a signal that carries only the key
    (no embedder answered), whose row moves the stored vector's ts to this use."""

    key: bytes
    vector: FloatArray | None
    ts: float

    def row(self, model: str) -> tuple[Any, ...]:
        if self.vector is None:
            return (self.key, model, None, None, self.ts)
        return (self.key, model, int(self.vector.shape[0]),
                np.ascontiguousarray(self.vector, dtype=np.float32).tobytes(), self.ts)


AnswerRow = tuple[float, str | None, str | None, bytes | None, str, bytes | None]
"""An ``answer`` signal as stored: ts, route, tier, vector key, detail JSON, vector bytes."""


SignalRow = tuple[Any, ...]
"""A signal as written: ``Signal.row()``."""
VectorRow = tuple[Any, ...]
"""A prompt's vector as written: ``PromptVector.row(model)``."""


def split_vectors(vectors: Sequence[VectorRow]) -> tuple[list[VectorRow], list[VectorRow]]:
    """A batch's vector rows: those with a vector (to upsert), and as (key, model, ts) the last
    uses of keys queued without one (to move a stored vector's ts forward)."""
    stored = [v for v in vectors if v[3] is not None]
    if len(stored) == len(vectors):
        return stored, []
    return stored, [(v[0], v[1], v[4]) for v in vectors if v[3] is None]


class SignalSink(Protocol):
    """Where batches of signals go: one transaction per batch; a vector already stored for its
    key and model is kept, its ``ts`` moved forward to the later write's, as a row without a
    vector (``split_vectors``) moves it. The two reads serve ``POST /v1/feedback``."""

    async def write(self, signals: Sequence[SignalRow], vectors: Sequence[VectorRow]
                    ) -> None: ...

    async def expire(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` signals older than ``before``, and the vectors of their keys
        last used before it, in one transaction; how many signals were deleted. Safe while
        other processes write and expire the same tables."""
        ...

    async def answers(self, request_id: str, model: str) -> list[AnswerRow]:
        """The latest ``answer`` signals under ``request_id`` (any tenant), newest first."""
        ...

    async def rated(self, request_id: str, tenant: str) -> bool:
        """Whether a ``feedback`` signal of ``tenant`` for ``request_id`` is stored."""
        ...

    async def close(self) -> None: ...


class SqliteSignals:
    """The embedded sink: this replica's own SQLite file."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    async def write(self, signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        await self._db.execute("BEGIN")
        try:
            stored, last_uses = split_vectors(vectors)
            await self._db.executemany(_INSERT_SIGNAL, signals)
            await self._db.executemany(_UPSERT_VECTOR, stored)
            await self._db.executemany(_LAST_USE, last_uses)
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def expire(self, before: float, limit: int) -> int:
        await self._db.execute("BEGIN")
        try:
            async with self._db.execute(_EXPIRE_SIGNALS, (*KINDS, before, limit)) as cursor:
                deleted = list(await cursor.fetchall())
            keys = {key for key, in deleted if key is not None}
            await self._db.executemany(_EXPIRE_VECTORS, [(key, before) for key in keys])
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return len(deleted)

    async def answers(self, request_id: str, model: str) -> list[AnswerRow]:
        async with self._db.execute(_FIND_ANSWER, (model, request_id)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def rated(self, request_id: str, tenant: str) -> bool:
        async with self._db.execute(_RATED, (request_id, tenant)) as cursor:
            return await cursor.fetchone() is not None

    async def close(self) -> None:
        await self._db.close()


class SignalStore:
    """A bounded queue of signals and the task that writes it (see the module docstring)."""

    def __init__(self, sink: SignalSink, *, model: str = "",
                 flush_interval_s: float = 0.25, batch: int = 256, max_pending: int = 10_000,
                 retention_s: float = 0.0, sweep_interval_s: float = 60.0,
                 sweep_batch: int = 5000, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self._sink = sink
        self._batch = batch
        self._max_pending = max_pending
        self._retention_s = retention_s
        self._sweep_interval_s = sweep_interval_s
        self._sweep_batch = sweep_batch
        self._clock = clock
        self._next_sweep = 0.0
        # Rows are made as signals arrive, a few microseconds each inside a request, not all
        # at once when a batch is written: a batch's worth of rows made in one go held the
        # event loop ~1 ms, the p99 of requests that came then (bench/RESULTS.md, issue 20).
        self._signals: list[SignalRow] = []
        self._vectors: list[VectorRow] = []
        # Where each queued vector is in _vectors: a routed request's answer carries the vector
        # its decision already queued, and the sink would only refresh the copy's ts. A key
        # queued without a vector is a row too: the stored vector's last use.
        self._vector_at: dict[bytes, int] = {}
        self._lock = asyncio.Lock()
        self._writer = BatchWriter(self._write_and_sweep, interval_s=flush_interval_s,
                                   name="routing-signals")
        self.dropped = 0
        self.written = 0

    @classmethod
    async def open(cls, path: Path, **options: Any) -> SignalStore:
        """Connect (WAL), create the tables; ``start`` begins the background writes."""
        async def create_schema(db: aiosqlite.Connection) -> None:
            await db.execute("BEGIN IMMEDIATE")
            try:
                # Read under the write lock: a version read before it may be stale by the time
                # another process that opened the file at once has migrated it.
                async with db.execute("PRAGMA user_version") as cursor:
                    version = (await cursor.fetchone() or (0,))[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(f"{path}: schema {version} is newer than this gateway")
                if version == 1:
                    await _vectors_to_rowid_table(db)
                if 0 < version < 3:
                    await _vectors_last_used(db)
                for statement in _SCHEMA:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

        return cls(SqliteSignals(await open_wal(path, create_schema), path), **options)

    @property
    def path(self) -> Path | None:
        """The SQLite file, for readers of their own (the dashboard); None on PostgreSQL."""
        return self._sink.path if isinstance(self._sink, SqliteSignals) else None

    @property
    def pending(self) -> int:
        return len(self._signals)

    def record(self, signal: Signal, vector: FloatArray | None = None) -> bool:
        """Queue one signal (and its vector); never waits. False when it had to be dropped."""
        if self._writer.closing or len(self._signals) >= self._max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("signal queue full or closed: %d signals dropped", self.dropped)
            return False
        self._signals.append(signal.row())
        if signal.vector_key is not None:
            self._queue_vector(signal.vector_key, vector, signal.ts)
        if len(self._signals) >= self._batch:
            self._writer.wake()
        return True

    def _queue_vector(self, key: bytes, vector: FloatArray | None, ts: float) -> None:
        """A signal's prompt vector, or (``vector`` None, no embedder answered) the use of the
        stored one: a signal kept must keep the vector its key names, whoever stored it."""
        at = self._vector_at.get(key)
        if at is not None and self._vectors[at][3] is not None:
            vector = None  # queued with its vector: this signal adds its use (no copy to make)
        self._queue_row(PromptVector(key, vector, ts).row(self.model))

    def _queue_row(self, row: VectorRow) -> None:
        """``row`` merged into the queue: one row a key, with the vector if either has it, at
        the later use (what the sink would store of the two)."""
        at = self._vector_at.get(row[0])
        if at is None:
            self._vector_at[row[0]] = len(self._vectors)
            self._vectors.append(row)
            return
        queued = self._vectors[at]
        kept = row if queued[3] is None and row[3] is not None else queued
        ts = max(queued[-1], row[-1])
        self._vectors[at] = kept if kept[-1] == ts else (*kept[:-1], ts)

    def start(self) -> None:
        self._writer.start()

    async def flush(self, *, until_empty: bool = True) -> int:
        """Write every queued signal now, how many were written; with ``until_empty`` false,
        only those queued when it starts."""
        written = taken = 0
        async with self._lock:
            left = len(self._signals)
            while self._signals and (until_empty or taken < left):
                size = self._batch if until_empty else min(self._batch, left - taken)
                signals, vectors = self._signals[:size], self._vectors
                del self._signals[:size]
                taken += size
                self._vectors = []
                self._vector_at = {}
                try:
                    await self._sink.write(signals, vectors)
                except Exception:
                    log.exception("writing %d signals failed; they are dropped", len(signals))
                    self.dropped += len(signals)
                    if self._signals:
                        self._queue_again(vectors)
                    continue
                written += len(signals)
        self.written += written
        return written

    def _queue_again(self, vectors: list[VectorRow]) -> None:
        """A failed batch's vectors, back in the queue: a batch takes every queued vector, the
        signals still waiting (which refer to some of them) included. Those signals bound them:
        with none left, a failed batch's vectors go with it."""
        for row in vectors:
            self._queue_row(row)

    async def _write_and_sweep(self) -> None:
        """The writer task's round: what is queued, then a sweep when one is due."""
        await self.flush(until_empty=False)
        if self._clock() >= self._next_sweep:
            self._next_sweep = self._clock() + self._sweep_interval_s
            try:
                await self.sweep()
            except Exception:  # the next sweep starts over where this one stopped
                log.exception("deleting expired routing signals failed")

    async def sweep(self) -> int:
        """Delete the signals older than the retention (and the vectors no kept signal refers
        to), ``sweep_batch`` at a time, one transaction each; how many signals went. A full batch
        queued meanwhile is written between two transactions; closing stops it."""
        if self._retention_s <= 0:
            return 0
        before = self._clock() - self._retention_s
        deleted = 0
        while not self._writer.closing:
            async with self._lock:
                count = await self._sink.expire(before, self._sweep_batch)
            deleted += count
            if count < self._sweep_batch:
                break
            if len(self._signals) >= self._batch:
                await self.flush(until_empty=False)
        if deleted:
            log.debug("routing signals: %d older than %s deleted", deleted,
                     time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before)))
        return deleted

    async def close(self) -> None:
        """Stop taking signals, write those queued, stop the writer, close the database."""
        await self._writer.close()
        try:
            await self.flush()
        finally:
            await self._sink.close()
        if self.dropped:
            log.warning("%d routing signals were dropped", self.dropped)

    # The request path's calls, one per kind of signal.

    def decision(self, request_id: str, decision: Decision, text: str,
                 vector: FloatArray | None) -> bool:
        """A routing decision, with the prompt's vector when there was one."""
        detail: dict[str, Any] = {"reason": decision.reason.value, "detail": decision.detail,
                  "confidence": decision.confidence, "score": decision.score,
                  "margin": decision.margin,
                  "ranked": [[r.route, round(r.score, 4)] for r in decision.ranked[:3]]}
        if (note := decision.learned) is not None:
            detail["learned"] = {"prior_tier": note.prior_tier, "explored": note.explored,
                                 "outcomes": note.count,
                                 "p": {t: round(e.p, 4) for t, e in note.estimates}}
        key = prompt_key(text) if text else None
        return self.record(Signal(SignalKind.DECISION, request_id, decision.route,
                                  decision.tier, vector_key=key, detail=detail), vector)

    def answer(self, answered: Answered) -> bool:
        """A request's answer as the client got it (what feedback later refers to)."""
        return self.record(Signal(SignalKind.ANSWER, answered.request_id, answered.route,
                                  answered.tier, vector_key=answered.text_key,
                                  detail=answered.detail(), ts=answered.at_s), answered.vector)

    def client_retry(self, earlier: Answered, request_id: str, similarity: float) -> bool:
        """``request_id`` asked again, at once, for what ``earlier`` answered."""
        detail = {"tenant": earlier.tenant, "retried_by": request_id,
                  "similarity": round(similarity, 4)}
        return self.record(Signal(SignalKind.CLIENT_RETRY, earlier.request_id, earlier.route,
                                  earlier.tier, vector_key=earlier.text_key, detail=detail),
                           earlier.vector)

    def feedback(self, answered: Answered, score: float, comment: str | None, *,
                 counted: bool = True) -> bool:
        """What the tenant said of an answer (``score``: 1 good, 0 bad); ``counted`` False:
        the answer had been scored before, and only the first score teaches the router."""
        detail = {"tenant": answered.tenant, "score": score, "comment": comment,
                  "cached": answered.cached, "counted": counted}
        # With its vector, so that the vector is kept as long as the feedback is.
        return self.record(Signal(SignalKind.FEEDBACK, answered.request_id, answered.route,
                                  answered.tier, vector_key=answered.text_key, detail=detail),
                           answered.vector)

    async def rated(self, request_id: str, tenant: str) -> bool:
        """Whether ``tenant`` has scored its answer ``request_id`` before (queued ones too)."""
        await self.flush()
        return await self._sink.rated(request_id, tenant)

    async def find_answer(self, request_id: str, tenant: str) -> Answered | None:
        """The latest answer ``tenant`` got under ``request_id`` (queued ones included), with its
        vector when one was stored; None when there is none."""
        await self.flush()
        for ts, route, tier, key, detail_text, blob in await self._sink.answers(request_id,
                                                                                self.model):
            detail = json.loads(detail_text)
            if detail.get("tenant") != tenant:
                continue  # request ids are the client's to choose: another tenant's same id
            vector = np.frombuffer(blob, dtype=np.float32).copy() if blob is not None else None
            return Answered(request_id, tenant, tier, route, vector, key,
                            tuple((str(t), str(k)) for t, k in detail.get("failed", ())),
                            bool(detail.get("cached")), bool(detail.get("learned")), ts,
                            _decided(detail.get("decided")))
        return None

    def escalation(self, request_id: str, decision: Decision, from_tier: str,
                   to_tier: str | None, reason: EscalationReason, deployment: str | None = None
                   ) -> bool:
        """An answer (or a whole tier) failed a check; ``to_tier`` None: nothing left to ask."""
        detail = {"kind": reason.kind.value, "detail": reason.detail, "to_tier": to_tier}
        return self.record(Signal(SignalKind.ESCALATION, request_id, decision.route, from_tier,
                                  deployment, detail=detail))

    def attempts(self, request_id: str, route: str | None, tier: str | None,
                 attempts: Sequence[Attempt]) -> int:
        """Each failed attempt (``provider_failure``) and each attempt after the first
        (``retry``) of one failover run; the number of signals queued."""
        queued = 0
        for i, attempt in enumerate(attempts):
            if i > 0:
                queued += self.record(Signal(SignalKind.RETRY, request_id, route, tier,
                                             attempt.deployment.id, detail={"attempt": i + 1}))
            if attempt.failure is not None:
                detail = {"kind": attempt.failure.kind.value, "status": attempt.failure.status,
                          "message": attempt.failure.message[:500], "attempt": i + 1}
                queued += self.record(Signal(SignalKind.PROVIDER_FAILURE, request_id, route,
                                             tier, attempt.deployment.id, detail=detail))
        return queued


async def _vectors_to_rowid_table(db: aiosqlite.Connection) -> None:
    """Version 1's vectors, moved into version 2's rowid table (inside the caller's
    transaction: a file is migrated whole or not at all)."""
    await db.execute(_VECTORS_TABLE.format(name="vectors_v2"))
    await db.execute("INSERT INTO vectors_v2 (key, model, dim, vector, ts) "
                     "SELECT key, model, dim, vector, ts FROM vectors")
    await db.execute("DROP TABLE vectors")
    await db.execute("ALTER TABLE vectors_v2 RENAME TO vectors")
    log.info("routing signals: vectors moved to a rowid table (schema version 2)")


async def _vectors_last_used(db: aiosqlite.Connection) -> None:
    """Version 2 kept each vector's first write as its ts; version 3 its last use, which the
    sweep reads (inside the caller's transaction, like the move to a rowid table)."""
    await db.execute(
        "UPDATE vectors SET ts = last.ts FROM (SELECT vector_key, max(ts) AS ts FROM signals "
        "WHERE vector_key IS NOT NULL GROUP BY vector_key) AS last "
        "WHERE vectors.key = last.vector_key AND last.ts > vectors.ts")
    log.info("routing signals: vectors' ts set to their last use (schema version 3)")


def _decided(stored: Any) -> tuple[tuple[str, float], ...]:
    """An answer's ``decided`` estimates as stored in its detail (absent in older rows)."""
    if not isinstance(stored, list):
        return ()
    return tuple((str(pair[0]), float(pair[1])) for pair in stored
                 if isinstance(pair, list) and len(pair) == 2
                 and isinstance(pair[1], (int, float)))
