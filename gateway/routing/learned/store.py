"""The learner's outcomes on disk: one SQLite file (``learning.sqlite3``, WAL) via aiosqlite.

Each outcome is one row: scope ('' for the global memory, else the tenant), tier, acceptability,
weight, wall-clock time, tenant, source, and the prompt's embedding as a float16 blob (the
original vector, not the projection, so a changed ``dim`` or ``seed`` still restores),
whether it was observed after an escalation and the estimate the policy chose its tier with
(columns added to older files on open, their rows reading as direct and undecided). ``load``
returns the newest ``limit`` rows of every scope, oldest first; ``trim`` deletes the rest, so
the file stays as bounded as the memory. Beside them, table ``linear`` holds each scope's
linear statistics (``LinearState``) as of the newest outcome row then written: on restore, only
the rows after it are folded into them again (a checkpoint folded with another
``escalated_weight`` is rebuilt from the rows instead); table ``decision_bias`` each tier's
measured bias against the decisions' estimates, as of the newest row then written (an older
file's table ``bias`` measured another estimate, the neutral-prior one at fold time, and is
dropped on open). Touches only its database file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import numpy.typing as npt

from gateway.core.sqlite import open_wal
from gateway.routing.learned.linear import LinearState

FloatArray = npt.NDArray[np.float32]
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outcomes (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        tier TEXT NOT NULL,
        acceptable REAL NOT NULL,
        weight REAL NOT NULL,
        at_s REAL NOT NULL,
        tenant TEXT,
        source TEXT NOT NULL,
        vector BLOB NOT NULL,
        escalated INTEGER NOT NULL DEFAULT 0,
        decided REAL
    )""",
    "CREATE INDEX IF NOT EXISTS outcomes_scope ON outcomes (scope, id)",
    """CREATE TABLE IF NOT EXISTS linear (
        scope TEXT NOT NULL,
        tier TEXT NOT NULL,
        a BLOB NOT NULL,
        b BLOB NOT NULL,
        total REAL NOT NULL,
        at_s REAL NOT NULL,
        through_id INTEGER NOT NULL,
        escalated_weight REAL,
        PRIMARY KEY (scope, tier)
    )""",
    """CREATE TABLE IF NOT EXISTS decision_bias (
        tier TEXT PRIMARY KEY,
        error REAL NOT NULL,
        count REAL NOT NULL,
        through_id INTEGER NOT NULL
    )""",
    # Another statistic (the fold-time estimate with the neutral prior), not to be read as this.
    "DROP TABLE IF EXISTS bias",
)
_INSERT = (
    "INSERT INTO outcomes (scope, tier, acceptable, weight, at_s, tenant, source, vector, "
    "escalated, decided) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """One row: what ``Outcome`` holds, plus the scope it was remembered in."""

    scope: str
    vector: FloatArray
    tier: str
    acceptable: float
    weight: float
    at_s: float
    tenant: str | None
    source: str
    escalated: bool = False
    decided: float | None = None
    row_id: int = 0


@dataclass(frozen=True, slots=True)
class StoredLinear:
    """One scope's linear estimate of one tier, as of outcome row ``through_id``."""

    scope: str
    state: LinearState
    through_id: int


class OutcomeStore:
    """The open database; ``open`` creates it, ``close`` closes it."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> OutcomeStore:
        async def setup(db: aiosqlite.Connection) -> None:
            for statement in _SCHEMA:
                await db.execute(statement)
            await _add_column(db, "outcomes", "escalated", "INTEGER NOT NULL DEFAULT 0")
            await _add_column(db, "outcomes", "decided", "REAL")
            await _add_column(db, "linear", "escalated_weight", "REAL")

        return cls(await open_wal(path, setup))

    async def append(self, rows: Sequence[StoredOutcome]) -> None:
        """Write ``rows`` in one transaction."""
        if not rows:
            return
        await self._db.execute("BEGIN")
        try:
            await self._db.executemany(_INSERT, [
                (r.scope, r.tier, r.acceptable, r.weight, r.at_s, r.tenant, r.source,
                 np.asarray(r.vector, dtype=np.float16).tobytes(), int(r.escalated), r.decided)
                for r in rows
            ])
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def load(self, limit: int) -> list[StoredOutcome]:
        """The newest ``limit`` rows of each scope, oldest first (ids ascending)."""
        # One query for every scope (as ``trim`` deletes), not one per tenant at start-up.
        async with self._db.execute(
            "SELECT scope, tier, acceptable, weight, at_s, tenant, source, vector, id, escalated, "
            "decided "
            "FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY scope ORDER BY id DESC) AS n "
            "FROM outcomes) WHERE n <= ? ORDER BY id", (limit,),
        ) as cursor:
            found = await cursor.fetchall()
        return [
            StoredOutcome(
                scope=str(s), tier=str(tier), acceptable=float(ok), weight=float(w),
                at_s=float(at), tenant=tenant, source=str(source),
                vector=np.frombuffer(blob, dtype=np.float16).astype(np.float32),
                row_id=int(row_id), escalated=bool(escalated),
                decided=None if decided is None else float(decided),
            )
            for s, tier, ok, w, at, tenant, source, blob, row_id, escalated, decided in found
        ]

    async def trim(self, limit: int) -> None:
        """Delete every row older than the newest ``limit`` of its scope."""
        await self._db.execute(
            "DELETE FROM outcomes WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
            "(PARTITION BY scope ORDER BY id DESC) AS n FROM outcomes) WHERE n > ?)", (limit,),
        )

    async def save_linear(self, scope: str, states: Sequence[LinearState],
                          escalated_weight: float) -> None:
        """Replace ``scope``'s linear statistics by ``states``, as of the newest row written,
        folded with ``escalated_weight`` (what a restart with another one cannot reuse)."""
        through = await self._newest_id()
        await self._db.executemany(  # each row stands alone: its own through_id
            "INSERT OR REPLACE INTO linear (scope, tier, a, b, total, at_s, through_id, "
            "escalated_weight) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(scope, st.tier, st.a.astype(np.float32).tobytes(),
              st.b.astype(np.float64).tobytes(), st.total, st.at_s, through, escalated_weight)
             for st in states],
        )

    async def load_linear(self, escalated_weight: float) -> list[StoredLinear]:
        """Every saved linear statistic (square ``a`` matrices rebuilt from their size); none of
        a scope with a damaged row or one folded with another ``escalated_weight`` (its
        escalated outcomes weighed otherwise than the setting now asks)."""
        async with self._db.execute(
            "SELECT scope, tier, a, b, total, at_s, through_id, escalated_weight FROM linear"
        ) as cursor:
            rows = await cursor.fetchall()
        out, damaged = [], set()
        for scope, tier, a, b, total, at_s, through, folded_with in rows:
            flat, coef = _floats(a, np.float32), _floats(b, np.float64)
            side = math.isqrt(flat.size)
            stale = folded_with is not None and float(folded_with) != escalated_weight
            if stale or side == 0 or side * side != flat.size or coef.size != side:
                # A damaged row drops its whole scope: the kept outcomes rebuild every tier of
                # it, which they could not do for one tier beside the others' checkpoints.
                damaged.add(str(scope))
                continue
            state = LinearState(str(tier), flat.reshape(side, side).astype(np.float32),
                                coef.astype(np.float64), float(total), float(at_s))
            out.append(StoredLinear(str(scope), state, int(through)))
        return [saved for saved in out if saved.scope not in damaged]

    async def save_bias(self, errors: Mapping[str, tuple[float, float]]) -> None:
        """Each tier's decayed weighted sum of (outcome less decided estimate) and its decayed
        weight, as of the newest row written (a restart scores the rows after it)."""
        through = await self._newest_id()
        await self._db.executemany(
            "INSERT OR REPLACE INTO decision_bias (tier, error, count, through_id) "
            "VALUES (?, ?, ?, ?)",
            [(tier, e, n, through) for tier, (e, n) in errors.items()],
        )

    async def load_bias(self) -> dict[str, tuple[float, float, int]]:
        """The saved bias per tier and the newest row each covers. Each tier's own: the file is
        in autocommit, so each row of ``save_bias`` commits alone and a process that died
        between them left tiers checkpointed at different rows."""
        async with self._db.execute(
            "SELECT tier, error, count, through_id FROM decision_bias"
        ) as cursor:
            rows = await cursor.fetchall()
        return {str(tier): (float(e), float(n), int(through)) for tier, e, n, through in rows}

    async def _newest_id(self) -> int:
        async with self._db.execute("SELECT COALESCE(MAX(id), 0) FROM outcomes") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def count(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM outcomes") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self._db.close()


async def _add_column(db: aiosqlite.Connection, table: str, column: str, declared: str) -> None:
    """A file written before ``table`` had ``column`` gets it. Older outcome rows read as
    observed directly and older checkpoints as folded with any ``escalated_weight`` (NULL): that
    is what they were, since nothing was flagged when they were written."""
    async with db.execute(f"PRAGMA table_info({table})") as cursor:
        columns = {str(row[1]) for row in await cursor.fetchall()}
    if column not in columns:
        await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declared}")


def _floats(blob: bytes, dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
    """``blob`` as an array of ``dtype``; empty when its length does not fit (a damaged row)."""
    size = np.dtype(dtype).itemsize
    return np.frombuffer(blob, dtype=dtype) if len(blob) % size == 0 else np.zeros(0, dtype)
