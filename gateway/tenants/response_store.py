"""Stored Responses API responses, per tenant, for ``previous_response_id`` and ``GET``/``DELETE``.

``ResponseStore`` is the seam (a PostgreSQL backend can stand beside this one);
``SqliteResponseStore`` keeps them in their own SQLite file in ``server.data_dir``
(``responses.db``, WAL). Each row holds the response object as the client saw it and the
conversation up to and including its output, in chat completions messages, so that a follow-up
request continues it without translating anything twice. A row lives
``server.response_retention_days``; expired rows are never returned and are deleted as new
ones are written. Tenants never see each other's rows: every query names the tenant.

``put`` only queues (the request path never waits on SQLite: one write there cost 0.5 ms of
the gateway's time at c=1, more on a busy machine); a background task writes the queue in one
transaction as soon as it can, and reads look at the queue first, so a follow-up request sees a
response the moment it was answered. On a node of several processes sharing the file, the
follow-up may reach another process, which cannot see this one's queue: there (``shared``)
``put`` returns once its response is committed, so a client never holds a response id that
the node answers 404. ``close`` writes what is queued; a crash loses at most the responses of
the last write (milliseconds), as it can lose the ledger's last rows.
``response_store_context`` opens the store under ``RESPONSE_STORE``, owns its writer task,
and closes it on exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import orjson
from aiohttp import web

from gateway.core.appkeys import SETTINGS
from gateway.core.batch_writer import BatchWriter
from gateway.core.sqlite import open_wal

log = logging.getLogger(__name__)

Json = dict[str, Any]
FILE_NAME = "responses.db"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
        tenant TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, response BLOB NOT NULL, messages BLOB NOT NULL,
        PRIMARY KEY (tenant, id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS responses_expiry ON responses(expires_at)",
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: Json
    """The response object, as ``GET /v1/responses/{id}`` returns it."""
    messages: tuple[Json, ...]
    """The conversation through this response's output, as chat completions messages."""

    @property
    def id(self) -> str:
        return str(self.response["id"])


class ResponseStore(Protocol):
    async def put(self, tenant: str, stored: StoredResponse, retention_s: float) -> None: ...

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...

    async def close(self) -> None: ...


Key = tuple[str, str]
"""(tenant, response id)."""


class SqliteResponseStore:
    def __init__(self, db: aiosqlite.Connection, *, shared: bool = False) -> None:
        self._db = db
        self._shared = shared
        self._queued: dict[Key, tuple[StoredResponse, float]] = {}
        self._writing: dict[Key, tuple[StoredResponse, float]] = {}
        """The batch being written: still read from memory until it is committed."""
        self._queued_done: asyncio.Future[None] | None = None
        """Resolved once the queued batch's write has ended (``shared`` puts wait on it)."""
        # Only woken by a put: a write sweeps the expired ones too.
        self._writer = BatchWriter(self.flush, interval_s=None, name="response-store-writer")

    @classmethod
    async def open(cls, path: Path, *, shared: bool = False) -> SqliteResponseStore:
        async def schema(db: aiosqlite.Connection) -> None:
            for statement in _SCHEMA:
                await db.execute(statement)

        return cls(await open_wal(path, schema), shared=shared)

    def start(self) -> None:
        """Start the background writer; ``close`` stops it."""
        self._writer.start()

    async def put(self, tenant: str, stored: StoredResponse, retention_s: float) -> None:
        self._queued[(tenant, stored.id)] = (stored, time.time() + retention_s)
        self._writer.wake()
        if self._shared:
            if self._queued_done is None:
                self._queued_done = asyncio.get_running_loop().create_future()
            # shield: a client that leaves does not cancel the write others wait on too.
            await asyncio.shield(self._queued_done)

    async def flush(self) -> None:
        """Write every queued response (one transaction) and sweep the expired ones."""
        done, self._queued_done = self._queued_done, None
        try:
            await self._write_queued()
        finally:
            # A failed write keeps its responses queued for the next one and in memory here;
            # waiting for that (only a later put wakes the writer) could hold a client forever.
            if done is not None and not done.done():
                done.set_result(None)

    async def _write_queued(self) -> None:
        if not self._queued:
            return
        self._writing, self._queued = self._queued, {}
        now = time.time()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            await self._db.execute("DELETE FROM responses WHERE expires_at < ?", (now,))
            # The rows are read from _writing only now, with no await before the INSERT is
            # queued: a delete that came while the transaction began has already taken its
            # response out, and one that comes later queues its DELETE after this INSERT.
            rows = [row for key, (stored, expires) in self._writing.items()
                    if expires >= now and (row := _row(key, stored, now, expires)) is not None]
            await self._db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", rows)
            await self._db.execute("COMMIT")
        except Exception:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
            self._queued = {**self._writing, **self._queued}  # newer puts win
            raise
        finally:
            self._writing = {}

    def _in_memory(self, key: Key) -> StoredResponse | None:
        found = self._queued.get(key) or self._writing.get(key)
        return found[0] if found is not None and found[1] >= time.time() else None

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        if (found := self._in_memory((tenant, response_id))) is not None:
            return found
        rows = list(await self._db.execute_fetchall(
            "SELECT response, messages FROM responses WHERE tenant = ? AND id = ? "
            "AND expires_at >= ?", (tenant, response_id, time.time())))
        if not rows:
            return None
        return StoredResponse(orjson.loads(rows[0][0]), tuple(orjson.loads(rows[0][1])))

    async def delete(self, tenant: str, response_id: str) -> bool:
        key = (tenant, response_id)
        in_memory = self._in_memory(key) is not None
        self._queued.pop(key, None)
        self._writing.pop(key, None)  # not yet inserted: flush reads _writing just before it
        cursor = await self._db.execute(
            "DELETE FROM responses WHERE tenant = ? AND id = ? AND expires_at >= ?",
            (tenant, response_id, time.time()))
        return in_memory or cursor.rowcount > 0

    async def close(self) -> None:
        """Stop the writer after its current write, write what is left, close the file."""
        await self._writer.close()
        await self.flush()
        await self._db.close()


def _row(key: Key, stored: StoredResponse, now: float,
         expires: float) -> tuple[str, str, float, float, bytes, bytes] | None:
    """The response's row, or None (logged) when it cannot be written as JSON: kept in the
    batch, it would fail every later write with it, and every response queued after it."""
    try:
        return (*key, now, expires, orjson.dumps(stored.response), orjson.dumps(stored.messages))
    except orjson.JSONEncodeError as exc:
        log.error("response %s of tenant %s not stored: %s", key[1], key[0], exc)
        return None


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


async def response_store_context(app: web.Application) -> AsyncIterator[None]:
    """The store of Responses API responses, open while the app runs."""
    server = app[SETTINGS].server
    # One of a node's processes: the others read the same file, not this one's queue.
    store = await SqliteResponseStore.open(server.data_dir / FILE_NAME,
                                           shared=server.process_index is not None)
    store.start()
    app[RESPONSE_STORE] = store
    yield
    await store.close()
