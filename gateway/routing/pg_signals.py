"""The routing signals' sink on the shared PostgreSQL database (``signals``, ``signal_vectors``).

Beside ``signals.SqliteSignals``: the same batches, from every replica into one place, so a
learner reads the whole fleet's signals. A batch of signals goes in with COPY; vectors already
stored for their key and model are kept (``ON CONFLICT DO NOTHING``). Touches only those two
tables; the pool belongs to ``gateway.core.postgres``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.postgres import Database
from gateway.routing.signals import PromptVector, Signal

_SIGNAL_COLUMNS = ("ts", "kind", "request_id", "route", "tier", "deployment", "vector_key",
                   "detail")
_INSERT_VECTOR = (
    "INSERT INTO signal_vectors (key, model, dim, vector, ts) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key, model) DO NOTHING"
)


class PgSignalSink:
    def __init__(self, database: Database) -> None:
        self._pool = database.pool

    async def write(self, signals: Sequence[Signal], vectors: Sequence[PromptVector],
                    model: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "signals", records=[s.row() for s in signals], columns=_SIGNAL_COLUMNS
            )
            if vectors:
                await conn.executemany(_INSERT_VECTOR, [v.row(model) for v in vectors])

    async def close(self) -> None:
        """Nothing of its own: the pool belongs to the database's cleanup context."""
