"""The cache's entries on the shared PostgreSQL database, and the notices that keep every
replica's hnswlib graphs in step with them.

All replicas store into one ``cache_entries`` table; ids come from its identity sequence, so an
id means the same entry, and the same hnswlib label, on every replica. Each write (a batch stored,
entries removed, a namespace dropped) sends a NOTIFY on ``gateway_cache`` in its own transaction:
PostgreSQL delivers it at commit, so a peer that hears of an entry can always read it. Each
replica LISTENs on a connection of its own and ignores its own notices (the payload starts with
the writer's random origin); when that connection drops it reconnects, then asks for a full
re-read (a ``resync`` notice), since what was sent meanwhile is lost. Why PostgreSQL and not
Redis pub/sub: the notice is atomic with the row, and the cache then needs nothing beyond the
database that already holds its entries.

Answers are read for lookups through ``PgAnswerReader``: the index pool's search job calls it from
a worker thread, which hands the query to the event loop and waits for it (the loop is free: it is
only awaiting that job). Touches only ``cache_entries`` and ``cache_meta``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, Protocol, cast

import asyncpg

from gateway.cache.index import FloatArray, VectorSpace
from gateway.cache.notice import Notice
from gateway.cache.store import (
    STORED_COLUMNS,
    NewEntry,
    StoredEntry,
    stored_entry,
    vector_bytes,
    vector_matrix,
)
from gateway.core.lifecycle import stop_task
from gateway.core.postgres import DATABASE_ERRORS, Database

log = logging.getLogger(__name__)

CHANNEL = "gateway_cache"
_NOTICE_IDS = 500  # ids per notice: a NOTIFY payload holds at most 8000 bytes
_BATCH_ROWS = 2000
_COLUMNS = ("id", "namespace", "fingerprint", "exact_key", "text", "vector", "body",
            "created_at", "expires_at", "last_hit_at")
_KINDS = ("stored", "removed", "dropped")


class Executor(Protocol):
    async def execute(self, query: str, *args: Any) -> str: ...


class PgAnswerReader:
    """Answers for lookups, from the pool; ``bodies`` may be called from any worker thread."""

    def __init__(self, pool: asyncpg.Pool, loop: asyncio.AbstractEventLoop,
                 timeout_s: float) -> None:
        self._pool = pool
        self._loop = loop
        self._timeout_s = timeout_s

    def bodies(self, ids: Sequence[int], fingerprint: str) -> dict[int, bytes]:
        if not ids:
            return {}
        future = asyncio.run_coroutine_threadsafe(self._bodies(list(ids), fingerprint),
                                                  self._loop)
        try:
            return future.result(self._timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    async def _bodies(self, ids: list[int], fingerprint: str) -> dict[int, bytes]:
        rows = await self._pool.fetch(
            "SELECT id, body FROM cache_entries WHERE id = ANY($1::bigint[]) AND fingerprint = $2",
            ids, fingerprint,
        )
        return {int(r[0]): bytes(r[1]) for r in rows}

    async def body(self, entry_id: int) -> bytes | None:
        value = await self._pool.fetchval("SELECT body FROM cache_entries WHERE id = $1", entry_id)
        return None if value is None else bytes(value)

    def close(self) -> None:
        """Nothing of its own: the pool belongs to the database's cleanup context."""


class PgCacheStore:
    """The shared table of cache entries, and this replica's LISTEN connection."""

    def __init__(self, database: Database, loop: asyncio.AbstractEventLoop) -> None:
        self._database = database
        self._pool = database.pool
        self.origin = secrets.token_hex(8)
        self._reader = PgAnswerReader(database.pool, loop, database.settings.database_timeout_s)
        self._listener: asyncpg.Connection | None = None
        self._on_notice: Callable[[Notice], None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0

    @classmethod
    async def open(cls, database: Database) -> PgCacheStore:
        return cls(database, asyncio.get_running_loop())

    @property
    def reader(self) -> PgAnswerReader:
        return self._reader

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            await stop_task(self._reconnect)
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()

    async def listen(self, on_notice: Callable[[Notice], None]) -> None:
        self._on_notice = on_notice
        await self._connect_listener()

    async def _connect_listener(self) -> None:
        settings = self._database.settings
        listener = await asyncpg.connect(settings.database_url,
                                         timeout=settings.database_timeout_s)
        listener.add_termination_listener(self._lost)
        await listener.add_listener(CHANNEL, self._heard)
        self._listener = listener

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        notice = self._parse(str(payload))
        if notice is not None and self._on_notice is not None:
            self._on_notice(notice)

    def _lost(self, _conn: object) -> None:
        if self._closing:
            return
        log.warning("cache notices: the LISTEN connection closed; reconnecting")
        self._listener = None
        self._reconnect = asyncio.get_running_loop().create_task(
            self._listen_again(), name="cache-listen-again"
        )

    async def _listen_again(self) -> None:
        """Reconnect (backing off to 5 s), then ask for a full re-read: notices sent while
        nobody listened are gone, the table is not."""
        delay_s = 0.1
        while True:
            try:
                await self._connect_listener()
                break
            except DATABASE_ERRORS as exc:
                log.warning("cache notices: cannot listen yet (%s); retrying", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
        self.reconnects += 1
        log.info("cache notices: listening again; re-reading the entries")
        if self._on_notice is not None:
            self._on_notice(Notice("resync"))

    def _parse(self, payload: str) -> Notice | None:
        origin, kind, rest = [*payload.split(" ", 2), "", ""][:3]
        if origin == self.origin or kind not in _KINDS:
            return None
        what = cast(Literal["stored", "removed", "dropped"], kind)
        if what == "dropped":
            return Notice(what, namespace=rest)
        return Notice(what, ids=tuple(int(i) for i in rest.split(",") if i))

    async def _notify(self, conn: Executor, kind: str, items: Sequence[Any]) -> None:
        if kind == "dropped":
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL,
                               f"{self.origin} dropped {items[0]}")
            return
        for start in range(0, len(items), _NOTICE_IDS):
            ids = ",".join(str(i) for i in items[start : start + _NOTICE_IDS])
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.origin} {kind} {ids}")

    async def meta(self, key: str) -> str | None:
        value = await self._pool.fetchval("SELECT value FROM cache_meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def adopt_space(self, space: VectorSpace | None) -> int:
        """As ``CacheStore.adopt_space``, for every replica at once."""
        if space is None:
            return 0
        name = f"{space.model}/{space.dim}"
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT value FROM cache_meta WHERE key = 'vector_space' FOR UPDATE"
            )
            dropped = 0
            if current is not None and current != name:
                status = await conn.execute(
                    "UPDATE cache_entries SET vector = NULL WHERE vector IS NOT NULL"
                )
                dropped = int(status.rsplit(" ", 1)[1])
                log.warning("cache vectors were made by %s, not %s: %d dropped (exact hits "
                            "only)", current, name, dropped)
            await conn.execute(
                "INSERT INTO cache_meta (key, value) VALUES ('vector_space', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", name,
            )
        return dropped

    async def insert(self, entries: Sequence[NewEntry]) -> list[int]:
        """Write a batch with COPY in one transaction that also tells the peers; the new ids."""
        async with self._pool.acquire() as conn, conn.transaction():
            ids = [int(r[0]) for r in await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('cache_entries', 'id')) "
                "FROM generate_series(1, $1)", len(entries),
            )]
            records = [
                (i, e.namespace, e.fingerprint, e.exact_key, e.text, vector_bytes(e.vector),
                 e.body, e.created_at, e.expires_at, e.created_at)
                for i, e in zip(ids, entries, strict=True)
            ]
            await conn.copy_records_to_table("cache_entries", records=records, columns=_COLUMNS)
            await self._notify(conn, "stored", ids)
        return ids

    async def entries(self) -> AsyncIterator[StoredEntry]:
        async with self._pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                f"SELECT {STORED_COLUMNS} FROM cache_entries ORDER BY last_hit_at, id",
                prefetch=_BATCH_ROWS,
            ):
                yield stored_entry(tuple(row.values()))

    async def stored_by_id(self, ids: Sequence[int]) -> list[StoredEntry]:
        rows = await self._pool.fetch(
            f"SELECT {STORED_COLUMNS} FROM cache_entries WHERE id = ANY($1::bigint[]) "
            "ORDER BY id", list(ids),
        )
        return [stored_entry(tuple(row.values())) for row in rows]

    async def vectors(
        self, namespace: str, dim: int
    ) -> AsyncIterator[tuple[list[int], FloatArray]]:
        async with self._pool.acquire() as conn, conn.transaction():
            cursor = await conn.cursor(
                "SELECT id, vector FROM cache_entries WHERE namespace = $1 AND vector IS NOT NULL"
                " ORDER BY id", namespace,
            )
            while rows := await cursor.fetch(_BATCH_ROWS):
                yield [int(r[0]) for r in rows], vector_matrix([bytes(r[1]) for r in rows], dim)

    async def vectors_by_id(self, ids: Sequence[int], dim: int) -> tuple[list[int], FloatArray]:
        rows = await self._pool.fetch(
            "SELECT id, vector FROM cache_entries WHERE id = ANY($1::bigint[]) "
            "AND vector IS NOT NULL ORDER BY id", list(ids),
        )
        return [int(r[0]) for r in rows], vector_matrix([bytes(r[1]) for r in rows], dim)

    async def delete(self, ids: Sequence[int]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM cache_entries WHERE id = ANY($1::bigint[])", list(ids))
            await self._notify(conn, "removed", ids)

    async def delete_namespace(self, namespace: str) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM cache_entries WHERE namespace = $1",
                                        namespace)
            await self._notify(conn, "dropped", [namespace])
        return int(status.rsplit(" ", 1)[1])

    async def record_hits(self, hits: dict[int, tuple[float, int]]) -> None:
        await self._pool.executemany(
            "UPDATE cache_entries SET last_hit_at = greatest(last_hit_at, $1), hits = hits + $2 "
            "WHERE id = $3",
            [(at, count, entry_id) for entry_id, (at, count) in hits.items()],
        )

    async def ids(self) -> set[int]:
        return {int(r[0]) for r in await self._pool.fetch("SELECT id FROM cache_entries")}

    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM cache_entries"))
