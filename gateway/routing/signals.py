"""The signals that will teach the router: every decision, escalation, retry and provider failure.

Rows go to their own SQLite file (``<data_dir>/signals.sqlite3``, WAL) through aiosqlite. The
request path only appends to a bounded in-memory queue (``record`` never waits and never
fails); a background task owned by the routing cleanup context writes the queue every
``flush_interval_s``, or sooner once ``batch`` rows wait, in one transaction. A full queue drops
rows and counts them (``dropped``). ``close`` writes what is left.

Each signal refers to the prompt's vector by ``vector_key`` = sha256 of the embedded text; the
vector itself is stored once per key and model in ``vectors`` as a float32 blob, so a learned
policy can later be trained from ``signals JOIN vectors``. Touches only its database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np

from gateway.core.answer import Attempt
from gateway.core.sqlite import open_wal
from gateway.routing.classifier import FloatArray
from gateway.routing.escalation import EscalationReason
from gateway.routing.policy import Decision

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
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
    """CREATE TABLE IF NOT EXISTS vectors (
        key BLOB NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (key, model)
    ) WITHOUT ROWID""",
)
_INSERT_SIGNAL = (
    "INSERT INTO signals (ts, kind, request_id, route, tier, deployment, vector_key, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_VECTOR = (
    "INSERT OR IGNORE INTO vectors (key, model, dim, vector, ts) VALUES (?, ?, ?, ?, ?)"
)


class SignalKind(enum.StrEnum):
    DECISION = "decision"
    ESCALATION = "escalation"
    RETRY = "retry"
    PROVIDER_FAILURE = "provider_failure"


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
                self.deployment, self.vector_key, json.dumps(dict(self.detail), default=str))


@dataclass(frozen=True, slots=True)
class _Vector:
    key: bytes
    vector: FloatArray
    ts: float


class SignalStore:
    """A bounded queue of signals and the task that writes it (see the module docstring)."""

    def __init__(self, db: aiosqlite.Connection, path: Path, *, model: str = "",
                 flush_interval_s: float = 0.25, batch: int = 256, max_pending: int = 10_000
                 ) -> None:
        self.path = path
        self.model = model
        self._db = db
        self._flush_interval_s = flush_interval_s
        self._batch = batch
        self._max_pending = max_pending
        self._signals: list[Signal] = []
        self._vectors: list[_Vector] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0

    @classmethod
    async def open(cls, path: Path, **options: Any) -> SignalStore:
        """Connect (WAL), create the tables; ``start`` begins the background writes."""
        async def create_schema(db: aiosqlite.Connection) -> None:
            for statement in _SCHEMA:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        return cls(await open_wal(path, create_schema), path, **options)

    @property
    def pending(self) -> int:
        return len(self._signals)

    def record(self, signal: Signal, vector: FloatArray | None = None) -> bool:
        """Queue one signal (and its vector); never waits. False when it had to be dropped."""
        if self._closing or len(self._signals) >= self._max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("signal queue full or closed: %d signals dropped", self.dropped)
            return False
        self._signals.append(signal)
        if vector is not None and signal.vector_key is not None:
            self._vectors.append(_Vector(signal.vector_key, vector, signal.ts))
        if len(self._signals) >= self._batch:
            self._wake.set()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="routing-signals")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write every queued signal now; how many were written."""
        written = 0
        async with self._lock:
            while self._signals:
                signals, vectors = self._signals[: self._batch], self._vectors
                del self._signals[: self._batch]
                self._vectors = []
                try:
                    await self._write(signals, vectors)
                except Exception:
                    log.exception("writing %d signals failed; they are dropped", len(signals))
                    self.dropped += len(signals)
                    continue
                written += len(signals)
        self.written += written
        return written

    async def _write(self, signals: Sequence[Signal], vectors: Sequence[_Vector]) -> None:
        await self._db.execute("BEGIN")
        try:
            await self._db.executemany(_INSERT_SIGNAL, [s.row() for s in signals])
            await self._db.executemany(_INSERT_VECTOR, [
                (v.key, self.model, int(v.vector.shape[0]),
                 np.ascontiguousarray(v.vector, dtype=np.float32).tobytes(), v.ts)
                for v in vectors
            ])
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Stop taking signals, write those queued, stop the writer, close the database."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.flush()
        finally:
            await self._db.close()
        if self.dropped:
            log.warning("%d routing signals were dropped", self.dropped)

    # The request path's calls, one per kind of signal.

    def decision(self, request_id: str, decision: Decision, text: str,
                 vector: FloatArray | None) -> bool:
        """A routing decision, with the prompt's vector when there was one."""
        detail = {"reason": decision.reason.value, "detail": decision.detail,
                  "confidence": decision.confidence, "score": decision.score,
                  "margin": decision.margin,
                  "ranked": [[r.route, round(r.score, 4)] for r in decision.ranked[:3]]}
        key = prompt_key(text) if text else None
        return self.record(Signal(SignalKind.DECISION, request_id, decision.route,
                                  decision.tier, vector_key=key, detail=detail), vector)

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
