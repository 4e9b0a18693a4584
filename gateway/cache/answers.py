"""Reading stored answers for lookups: read-only SQLite connections used from worker threads.

A lookup that finds an entry in memory still needs its answer from the database. Going through
the writer's aiosqlite connection costs three thread hops (execute, fetch, close) and queues
behind the writer's batches; an ``AnswerReader`` instead keeps read-only ``sqlite3``
connections, one per thread using it at a time, so a read is one plain call in whatever worker
thread already runs (the index pool's search job for a semantic lookup, this reader's own two
threads for an exact one). WAL lets these readers run beside the writer; each read is its own
transaction and sees every batch committed before it. Entries are written to SQLite before
they reach the index or the in-memory table, and leave the table before they leave SQLite, so
an entry a lookup can find has its row; a row deleted meanwhile reads as missing.

Touches only the cache database, read-only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_BUSY_TIMEOUT_MS = 200  # a lookup would rather miss than wait on the database
_THREADS = 2


class AnswerReader:
    """Read-only connections to one cache database, lent to one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="cache-read")

    def bodies(self, ids: Sequence[int], fingerprint: str) -> dict[int, bytes]:
        """The answers of ``ids`` stored under ``fingerprint``.

        Blocking: call it from a worker thread, never on the event loop.
        """
        if not ids:
            return {}
        rows = self._read(
            f"SELECT id, body FROM entries WHERE id IN ({','.join('?' * len(ids))})"
            " AND fingerprint = ?", [*ids, fingerprint])
        return {int(r[0]): bytes(r[1]) for r in rows}

    def _body(self, entry_id: int) -> bytes | None:
        rows = self._read("SELECT body FROM entries WHERE id = ?", [entry_id])
        return bytes(rows[0][0]) if rows else None

    def _read(self, sql: str, args: Sequence[int | str]) -> list[Any]:
        db = self._borrow()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            self._give_back(db)

    async def body(self, entry_id: int) -> bytes | None:
        """One entry's answer, read in this reader's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._body, entry_id)

    def close(self) -> None:
        """Wait for reads in this reader's threads, then close every connection.

        Whoever else calls ``bodies`` from its threads (the index pool) stops first.
        """
        self._pool.shutdown(wait=True)
        with self._lock:
            self._closed = True
            connections, self._all, self._idle = self._all, [], []
        for db in connections:
            db.close()

    def _borrow(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise RuntimeError("the cache's answer reader is closed")
            if self._idle:
                return self._idle.pop()
        db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                             isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        with self._lock:
            if not self._closed:
                self._all.append(db)
                return db
        db.close()
        raise RuntimeError("the cache's answer reader is closed")

    def _give_back(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(db)
                return
        db.close()
