"""The shared PostgreSQL database: one asyncpg pool per process, the schema's migrations, and
the few helpers every PostgreSQL backend (tenants and ledger, cache entries, signals) shares.

``Database.open`` connects a pool and applies the versioned migrations in
``gateway/core/migrations/NNNN_name.sql`` that are not yet recorded in ``schema_migrations``,
each in its own transaction, under a session advisory lock so that replicas starting together
apply each migration exactly once. ``fetch`` runs the SQL the SQLite backends share with this one
(``?`` or ``:name`` placeholders, rewritten to ``$n``). Touches only the database named by the
URL; the URL is never logged (it may hold a password).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import asyncpg
from aiohttp import web

from gateway.core.cluster import ClusterSettings
from gateway.core.sqlite import Params

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6761_7465_7761_7931
"""The advisory lock key every replica takes while migrating ("gatewy1" in ASCII)."""
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
"""

POSTGRES_ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
"""What asyncpg raises for a failed statement or a broken connection."""
DATABASE_ERRORS: tuple[type[Exception], ...] = (*POSTGRES_ERRORS, OSError)
"""What a call to the shared database raises when it fails or cannot be reached (OSError
includes TimeoutError)."""
STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, *DATABASE_ERRORS)
"""The same for a store that may be either SQLite or PostgreSQL."""


class DatabaseError(Exception):
    """The shared database cannot be reached or refused a statement (message has no URL)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found = []
    for item in resources.files("gateway.core").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(item.name)
        if match:
            found.append(Migration(int(match[1]), match[2], item.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def positional(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (our SQL has no literal ``?``)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
"""A ``:name`` placeholder (not a ``::type`` cast)."""


def numbered(sql: str, params: Params) -> tuple[str, list[Any]]:
    """A statement and its parameters for asyncpg: ``:name`` placeholders (``params`` a
    mapping; a name used twice is one ``$n``) or ``?`` ones (a sequence) as ``$1, $2, ...``."""
    if not isinstance(params, Mapping):
        return positional(sql), list(params)
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match[1], len(names) + 1)}"

    sql = _NAMED.sub(number, sql)
    return sql, [params[name] for name in names]


def plain(value: Any) -> Any:
    """A value as SQLite would have returned it: ``sum`` of integers is ``numeric`` here."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class Database:
    """The pool every PostgreSQL backend of this process borrows connections from."""

    def __init__(self, pool: asyncpg.Pool, settings: ClusterSettings) -> None:
        self.pool = pool
        self.settings = settings

    @classmethod
    async def open(cls, settings: ClusterSettings, *, migrate: bool = True) -> Database:
        """Connect a pool; with ``migrate``, bring the schema up to date first."""
        if settings.database_url is None:
            raise DatabaseError("no database URL is configured ([cluster] database_url_env)")
        try:
            pool = await asyncpg.create_pool(
                settings.database_url, min_size=1, max_size=settings.database_pool_size,
                timeout=settings.database_timeout_s,
                command_timeout=settings.database_timeout_s,
            )
        except DATABASE_ERRORS as exc:
            raise DatabaseError(f"cannot connect to the shared database: {exc}") from exc
        database = cls(pool, settings)
        try:
            if migrate:
                await database.migrate()
        except BaseException:
            await pool.close()
            raise
        return database

    @classmethod
    async def open_url(cls, url: str) -> Database:
        """A small pool on ``url`` with the default settings (tools and tests)."""
        return await cls.open(ClusterSettings(database_url=url, database_pool_size=2))

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> list[int]:
        """Apply every packaged migration not yet recorded; the versions applied now."""
        applied: list[int] = []
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(_SCHEMA_MIGRATIONS)
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                known = migrations()
                if done and max(done) > known[-1].version:
                    raise DatabaseError(
                        f"the shared database's schema ({max(done)}) is newer than this "
                        f"gateway's ({known[-1].version}): upgrade the gateway"
                    )
                for migration in known:
                    if migration.version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            migration.version, migration.name,
                        )
                    log.info("shared database: applied migration %04d_%s",
                             migration.version, migration.name)
                    applied.append(migration.version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return applied

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows of a query written with ``?`` or ``:name`` placeholders, values as SQLite gives
        them."""
        statement, args = numbered(sql, params)
        rows = await self.pool.fetch(statement, *args)
        return [tuple(plain(v) for v in row.values()) for row in rows]

    async def scalar(self, sql: str, params: Params = ()) -> Any:
        statement, args = numbered(sql, params)
        return plain(await self.pool.fetchval(statement, *args))


DATABASE = web.AppKey("database", Database)


def database_context(
    settings: ClusterSettings, *, migrate: bool = True,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context of the shared pool: connect and migrate (unless whoever started
    this process already did) before every backend that uses it (so it is registered before
    them), close after they are gone."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        database = await Database.open(settings, migrate=migrate)
        app[DATABASE] = database
        try:
            yield
        finally:
            await database.close()

    return context
