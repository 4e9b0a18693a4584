"""The routing signals' sink on the shared PostgreSQL database (``signals``, ``signal_vectors``).

Beside ``signals.SqliteSignals``: the same batches, from every replica into one place, so a
learner reads the whole fleet's signals. A batch of signals goes in with COPY; a vector already
stored for its key and model is kept, its ``ts`` moved forward to its last use (``ON CONFLICT
DO UPDATE``). Every replica sweeps expired rows (``expire``); rows another transaction holds are
skipped (``SKIP LOCKED``), so replicas sweeping at once neither wait for nor delete each other's
batches. Touches only those two tables; the pool belongs to ``gateway.core.postgres``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.postgres import Database
from gateway.routing.signals import KINDS, AnswerRow, SignalRow, VectorRow, split_vectors

_SIGNAL_COLUMNS = ("ts", "kind", "request_id", "route", "tier", "deployment", "vector_key",
                   "detail")
_FIND_ANSWER = (
    "SELECT s.ts, s.route, s.tier, s.vector_key, s.detail, v.vector FROM signals s "
    "LEFT JOIN signal_vectors v ON v.key = s.vector_key AND v.model = $1 "
    "WHERE s.kind = 'answer' AND s.request_id = $2 ORDER BY s.id DESC LIMIT 50"
)
_RATED = (
    "SELECT 1 FROM signals WHERE kind = 'feedback' AND request_id = $1 "
    "AND (detail::jsonb ->> 'tenant') = $2 LIMIT 1"
)
_UPSERT_VECTOR = (
    "INSERT INTO signal_vectors (key, model, dim, vector, ts) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key, model) DO UPDATE SET ts = EXCLUDED.ts "
    "WHERE signal_vectors.ts < EXCLUDED.ts"
)
_LAST_USE = "UPDATE signal_vectors SET ts = $3 WHERE key = $1 AND model = $2 AND ts < $3"
_EXPIRE_SIGNALS = (
    "DELETE FROM signals WHERE id IN (SELECT id FROM signals WHERE kind = ANY($1::text[]) "
    "AND ts < $2 LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING vector_key"
)
_EXPIRE_VECTORS = (
    "DELETE FROM signal_vectors WHERE (key, model) IN (SELECT key, model FROM signal_vectors "
    "WHERE key = ANY($1::bytea[]) AND ts < $2 FOR UPDATE SKIP LOCKED)"
)


class PgSignalSink:
    def __init__(self, database: Database) -> None:
        self._pool = database.pool

    async def write(self, signals: Sequence[SignalRow], vectors: Sequence[VectorRow]) -> None:
        stored, last_uses = split_vectors(vectors)
        async with self._pool.acquire() as conn:
            if last_uses:
                # Before the batch, in a transaction of its own: in the batch's, these locks
                # would come out of key order after the upserts' (a cycle with another
                # replica's batch). Should it fail, the batch is not written either.
                await conn.executemany(_LAST_USE, sorted(last_uses))
            async with conn.transaction():
                await conn.copy_records_to_table("signals", records=signals,
                                                 columns=_SIGNAL_COLUMNS)
                if stored:
                    # In key order: two replicas' batches lock the rows they share in the same
                    # order, so neither waits for a lock the other holds while holding one it
                    # wants.
                    await conn.executemany(_UPSERT_VECTOR, sorted(stored))

    async def expire(self, before: float, limit: int) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetch(_EXPIRE_SIGNALS, list(KINDS), before, limit)
            keys = list({bytes(r[0]) for r in deleted if r[0] is not None})
            if keys:
                # A vector skipped here is being swept by another replica or written again
                # (then it is in use): either way not one to delete now.
                await conn.execute(_EXPIRE_VECTORS, keys, before)
        return len(deleted)

    async def answers(self, request_id: str, model: str) -> list[AnswerRow]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_FIND_ANSWER, model, request_id)
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def rated(self, request_id: str, tenant: str) -> bool:
        async with self._pool.acquire() as conn:
            return await conn.fetchval(_RATED, request_id, tenant) is not None

    async def close(self) -> None:
        """Nothing of its own: the pool belongs to the database's cleanup context."""
