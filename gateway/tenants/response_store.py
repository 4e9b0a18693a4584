"""Stored Responses API responses, per tenant, for ``previous_response_id`` and ``GET``/``DELETE``.

``ResponseStore`` is the seam (a PostgreSQL backend can stand beside this one);
``SqliteResponseStore`` keeps them in their own SQLite file in ``server.data_dir``
(``responses.db``, WAL). Each row holds the response object as the client saw it and the
conversation up to and including its output, in chat completions messages, so that a follow-up
request continues it without translating anything twice. A row lives
``server.response_retention_days``; expired rows are never returned and are deleted as new
ones are written. Tenants never see each other's rows: every query names the tenant.
``response_store_context`` opens the store under ``RESPONSE_STORE`` and closes it on exit.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import orjson
from aiohttp import web

from gateway.core.appkeys import SETTINGS
from gateway.core.sqlite import open_wal

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


class SqliteResponseStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> SqliteResponseStore:
        async def schema(db: aiosqlite.Connection) -> None:
            for statement in _SCHEMA:
                await db.execute(statement)

        return cls(await open_wal(path, schema))

    async def put(self, tenant: str, stored: StoredResponse, retention_s: float) -> None:
        now = time.time()
        await self._db.execute("DELETE FROM responses WHERE expires_at < ?", (now,))
        await self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
            (tenant, stored.id, now, now + retention_s, orjson.dumps(stored.response),
             orjson.dumps(stored.messages)),
        )

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        rows = list(await self._db.execute_fetchall(
            "SELECT response, messages FROM responses WHERE tenant = ? AND id = ? "
            "AND expires_at >= ?", (tenant, response_id, time.time())))
        if not rows:
            return None
        return StoredResponse(orjson.loads(rows[0][0]), tuple(orjson.loads(rows[0][1])))

    async def delete(self, tenant: str, response_id: str) -> bool:
        cursor = await self._db.execute(
            "DELETE FROM responses WHERE tenant = ? AND id = ? AND expires_at >= ?",
            (tenant, response_id, time.time()))
        return cursor.rowcount > 0

    async def close(self) -> None:
        await self._db.close()


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


async def response_store_context(app: web.Application) -> AsyncIterator[None]:
    """The store of Responses API responses, open while the app runs."""
    store = await SqliteResponseStore.open(app[SETTINGS].server.data_dir / FILE_NAME)
    app[RESPONSE_STORE] = store
    yield
    await store.close()
