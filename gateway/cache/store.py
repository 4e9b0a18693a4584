"""The cache's source of truth: entries, their vectors and answers in SQLite (aiosqlite, WAL).

Own file (``<data_dir>/cache.sqlite3``), never shared with the tenants database. Writes come in
batches from the cache's writer task, one transaction each; with WAL and ``synchronous=NORMAL`` a
committed batch survives a killed process (only a power loss may take the last commits). Ids come
from ``AUTOINCREMENT`` and are never reused, so they double as the hnswlib labels and "newer than
the saved index" is simply a larger id. The ``meta`` table records which embedding model and
dimension the stored vectors belong to. Lookups read answers through ``reader``
(``answers.AnswerReader``: read-only connections in worker threads), not this connection.
Touches only its database file.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import numpy as np

from gateway.cache.answers import AnswerReader
from gateway.cache.index import FloatArray, VectorSpace
from gateway.core.sqlite import open_wal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    exact_key BLOB NOT NULL,
    text TEXT NOT NULL,
    vector BLOB,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_hit_at REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_namespace ON entries (namespace);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_at) WHERE expires_at IS NOT NULL;
"""
_BATCH_ROWS = 2000


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry waiting to be written; ``vector`` None means exact-only."""

    namespace: str
    fingerprint: str
    exact_key: bytes
    text: str
    vector: FloatArray | None
    body: bytes
    created_at: float
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as kept in memory: everything but its vector and answer."""

    entry_id: int
    namespace: str
    fingerprint: str
    exact_key: bytes
    text: str
    has_vector: bool
    created_at: float
    expires_at: float | None


class CacheStore:
    """One aiosqlite connection to the cache database (the writer's), and the lookups' reader."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.reader = AnswerReader(path)

    @classmethod
    async def open(cls, path: Path) -> CacheStore:
        async def create_schema(db: aiosqlite.Connection) -> None:
            await db.executescript(_SCHEMA)
            await db.commit()

        return cls(await open_wal(path, create_schema, autocommit=False), path)

    async def close(self) -> None:
        try:
            self.reader.close()
        finally:
            await self._db.close()

    async def meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def adopt_space(self, space: VectorSpace | None) -> int:
        """Record the vector space; vectors of another space are dropped (entries stay exact).

        Returns how many vectors were dropped.
        """
        if space is None:
            return 0
        name = f"{space.model}/{space.dim}"
        current = await self.meta("vector_space")
        dropped = 0
        if current is not None and current != name:
            cur = await self._db.execute(
                "UPDATE entries SET vector = NULL WHERE vector IS NOT NULL"
            )
            dropped = cur.rowcount
            log.warning("cache vectors were made by %s, not %s: %d dropped (exact hits only)",
                        current, name, dropped)
        await self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('vector_space', ?)", (name,)
        )
        await self._db.commit()
        return dropped

    async def insert(self, entries: Sequence[NewEntry]) -> list[int]:
        """Write a batch in one transaction; returns the new ids in order."""
        rows = [
            (e.namespace, e.fingerprint, e.exact_key, e.text,
             e.vector.astype("<f4").tobytes() if e.vector is not None else None,
             e.body, e.created_at, e.expires_at, e.created_at)
            for e in entries
        ]
        try:
            before = await self._last_id()
            await self._db.executemany(
                "INSERT INTO entries (namespace, fingerprint, exact_key, text, vector, body,"
                " created_at, expires_at, last_hit_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            async with self._db.execute(
                "SELECT id FROM entries WHERE id > ? ORDER BY id", (before,)
            ) as cur:
                ids = [int(r[0]) for r in await cur.fetchall()]
            if len(ids) != len(rows):
                raise RuntimeError("another writer changed the cache database during a batch")
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        return ids

    async def _last_id(self) -> int:
        async with self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'entries'"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def entries(self) -> AsyncIterator[StoredEntry]:
        """Every entry, least recently used first (the order the LRU is rebuilt in)."""
        async with self._db.execute(
            "SELECT id, namespace, fingerprint, exact_key, text, vector IS NOT NULL, created_at,"
            " expires_at FROM entries ORDER BY last_hit_at, id"
        ) as cur:
            async for row in cur:
                yield StoredEntry(
                    int(row[0]), str(row[1]), str(row[2]), bytes(row[3]), str(row[4]),
                    bool(row[5]), float(row[6]), None if row[7] is None else float(row[7]),
                )

    async def vectors(
        self, namespace: str, dim: int
    ) -> AsyncIterator[tuple[list[int], FloatArray]]:
        """A namespace's vectors in batches of ids and a [n, dim] array."""
        async with self._db.execute(
            "SELECT id, vector FROM entries WHERE namespace = ? AND vector IS NOT NULL"
            " ORDER BY id", (namespace,),
        ) as cur:
            while rows := await cur.fetchmany(_BATCH_ROWS):
                ids = [int(r[0]) for r in rows]
                flat = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4")
                yield ids, flat.reshape(len(ids), dim).astype(np.float32)

    async def vectors_by_id(self, ids: Sequence[int], dim: int) -> tuple[list[int], FloatArray]:
        found: list[int] = []
        blobs: list[bytes] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(
                f"SELECT id, vector FROM entries WHERE id IN ({marks}) AND vector IS NOT NULL",
                chunk,
            ) as cur:
                for row in await cur.fetchall():
                    found.append(int(row[0]))
                    blobs.append(bytes(row[1]))
        flat = np.frombuffer(b"".join(blobs), dtype="<f4")
        return found, flat.reshape(len(found), dim).astype(np.float32)

    async def delete(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            await self._db.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk)
        await self._db.commit()

    async def delete_namespace(self, namespace: str) -> int:
        cur = await self._db.execute("DELETE FROM entries WHERE namespace = ?", (namespace,))
        await self._db.commit()
        return cur.rowcount

    async def record_hits(self, hits: dict[int, tuple[float, int]]) -> None:
        """Last-hit times and hit counts, batched by the writer task."""
        await self._db.executemany(
            "UPDATE entries SET last_hit_at = ?, hits = hits + ? WHERE id = ?",
            [(at, count, entry_id) for entry_id, (at, count) in hits.items()],
        )
        await self._db.commit()

    async def count(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM entries") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
