"""The tenants database: one SQLite file (WAL) holding tenants, keys, the ledger, refusals and
their daily and hourly roll-ups (``rollups.py``).

``Store.open`` connects, applies the versioned migrations (``PRAGMA user_version``) and returns a
store; the CRUD for tenants and keys and the ledger's batch write live here, the ledger's queue
and queries in ``ledger.py``. ``pg_store.PgStore`` is the same (``backend.TenantStore``) on
PostgreSQL.
Every change to tenants or keys bumps ``meta.revision`` in the same transaction, so that a running
gateway notices changes made by another process (the CLI) cheaply. Nothing here is on the request
path: authentication and admission read in-memory copies.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.core.chat import field_error
from gateway.core.errors import InvalidRequest, NotFound
from gateway.core.sqlite import MAX_INT, Params, open_wal
from gateway.core.tenant_settings import INT_LIMITS, LIMIT_FIELDS, Limits
from gateway.tenants import rollups
from gateway.tenants.keys import generate_key, generate_key_id, hash_key, key_prefix

log = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_LIMIT_COLUMNS = """
    requests_per_minute INTEGER, tokens_per_minute INTEGER, max_concurrent INTEGER,
    daily_budget_usd REAL, monthly_budget_usd REAL"""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE tenants (
            name TEXT PRIMARY KEY, {_LIMIT_COLUMNS},
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        f"""CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
            name TEXT NOT NULL DEFAULT '', prefix TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
            {_LIMIT_COLUMNS},
            created_at REAL NOT NULL, revoked_at REAL)""",
        "CREATE INDEX api_keys_tenant ON api_keys(tenant)",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL,
            tenant TEXT NOT NULL, key_id TEXT NOT NULL, route TEXT, tier TEXT,
            model TEXT NOT NULL, deployment TEXT, tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL, cost REAL NOT NULL, estimated INTEGER NOT NULL,
            cache TEXT, saved_cost REAL NOT NULL, escalations INTEGER NOT NULL,
            attempts INTEGER NOT NULL, status INTEGER NOT NULL, latency_ms REAL NOT NULL,
            ttft_ms REAL)""",
        "CREATE INDEX usage_ts ON usage(ts)",
        "CREATE INDEX usage_tenant_ts ON usage(tenant, ts)",
        """CREATE TABLE usage_daily (
            day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, errors INTEGER NOT NULL, cache_hits INTEGER NOT NULL,
            tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, cost REAL NOT NULL,
            saved_cost REAL NOT NULL, latency_ms_sum REAL NOT NULL,
            PRIMARY KEY (day, tenant, key_id, model)) WITHOUT ROWID""",
        "INSERT INTO meta (key, value) VALUES ('revision', '0')",
    ),
    # Which API each request spoke (chat completions, Anthropic Messages, OpenAI Responses).
    ("ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'chat'",),
    # The answering model, failed attempts, refusals and the hourly roll-ups (``rollups.py``).
    (*rollups.SCHEMA, *rollups.BACKFILL),
)
SCHEMA_VERSION = len(MIGRATIONS)
LIMIT_SELECT = ", ".join(LIMIT_FIELDS)
USAGE_COLUMNS = (
    "request_id", "tenant", "key_id", "model", "status", "ts", "route", "tier", "deployment",
    "tokens_in", "tokens_out", "cost", "estimated", "cache", "saved_cost", "escalations",
    "attempts", "latency_ms", "ttft_ms", "api", "answered_model",
)
"""The ledger's columns in ``ledger.UsageRecord``'s field order (a test holds them equal)."""
REFUSAL_COLUMNS = (
    "ts", "request_id", "api", "method", "status", "code", "tenant", "key_id", "param", "count",
)
"""The refusals' columns in ``ledger.RefusalRecord``'s field order (a test holds them equal)."""
FAILED_COLUMNS = ("ts", "request_id", "deployment")
"""A failed upstream attempt's row: when, of which request, at which deployment."""
_INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
)
_INSERT_REFUSAL = (
    f"INSERT INTO refusals ({', '.join(REFUSAL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REFUSAL_COLUMNS))})"
)
_INSERT_FAILED = "INSERT INTO failed_attempts (ts, request_id, deployment) VALUES (?, ?, ?)"
_ROLL_UP = """
INSERT INTO usage_daily (day, tenant, key_id, model, requests, errors, cache_hits,
                         tokens_in, tokens_out, cost, saved_cost, latency_ms_sum)
SELECT date(ts, 'unixepoch'), tenant, key_id, model, count(*), sum(status >= 400),
       coalesce(sum(cache = 'hit'), 0), sum(tokens_in), sum(tokens_out), sum(cost), sum(saved_cost),
       sum(latency_ms)
FROM usage WHERE id > :after GROUP BY 1, 2, 3, 4
ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET
    requests = requests + excluded.requests, errors = errors + excluded.errors,
    cache_hits = cache_hits + excluded.cache_hits, tokens_in = tokens_in + excluded.tokens_in,
    tokens_out = tokens_out + excluded.tokens_out, cost = cost + excluded.cost,
    saved_cost = saved_cost + excluded.saved_cost,
    latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum
"""


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    limits: Limits
    disabled: bool
    created_at: float
    updated_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limits": self.limits.as_json(),
            "disabled": self.disabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: its hash, never the key itself."""

    id: str
    tenant: str
    name: str
    prefix: str
    digest: str = field(repr=False)
    limits: Limits
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "prefix": self.prefix,
            "limits": self.limits.as_json(),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


class Store:
    """One aiosqlite connection; transactions are serialised by a lock."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Connect, switch to WAL and bring the schema up to date."""
        async def migrate(db: aiosqlite.Connection) -> None:
            await db.execute("PRAGMA foreign_keys = ON")
            await rollups.register_functions(db)
            await cls(db, path)._migrate()

        return cls(await open_wal(path, migrate), path)

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, else rolled back."""
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self.transaction() as db:
            version = await self._scalar("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema {version} is newer than this gateway")
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")
                log.info("tenants database %s: migrated to schema %d", self.path, number)

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = list(await self.db.execute_fetchall(sql, params))
        return rows[0][0] if rows else None

    async def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "look again" signal."""
        return int(await self._scalar("PRAGMA data_version"))

    async def revision(self) -> int:
        return int(await self._scalar("SELECT value FROM meta WHERE key = 'revision'"))

    async def get_meta(self, key: str) -> str | None:
        value = await self._scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def claim_meta(self, key: str, value: str) -> str:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
        return str(await self.get_meta(key))

    # Tenants -----------------------------------------------------------------------------

    async def create_tenant(self, name: str, limits: Limits | None = None) -> Tenant:
        limits = limits or Limits()
        check_tenant_name(name)
        now = time.time()
        async with self.transaction() as db:
            if await self._scalar("SELECT 1 FROM tenants WHERE name = ?", (name,)):
                raise tenant_exists(name)
            await db.execute(
                f"INSERT INTO tenants (name, {LIMIT_SELECT}, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, *limit_values(limits), now, now),
            )
            await _bump(db)
        return Tenant(name, limits, False, now, now)

    async def get_tenant(self, name: str) -> Tenant:
        rows = await self._tenants("WHERE name = ?", (name,))
        if not rows:
            raise no_tenant(name)
        return rows[0]

    async def list_tenants(self) -> list[Tenant]:
        return await self._tenants("ORDER BY name", ())

    async def count_tenants(self) -> int:
        return int(await self._scalar("SELECT count(*) FROM tenants"))

    async def update_tenant(
        self, name: str, *, limits: Mapping[str, int | float | None] | None = None,
        disabled: bool | None = None,
    ) -> Tenant:
        """Change some limits (a None value removes that limit) and/or the disabled flag."""
        changes: dict[str, int | float | None] = check_limit_changes(limits or {})
        if disabled is not None:
            changes["disabled"] = int(disabled)
        async with self.transaction() as db:
            assignments = "".join(f"{column} = ?, " for column in changes)
            cursor = await db.execute(
                f"UPDATE tenants SET {assignments}updated_at = ? WHERE name = ?",
                (*changes.values(), time.time(), name),
            )
            if cursor.rowcount == 0:
                raise no_tenant(name)
            await _bump(db)
        return await self.get_tenant(name)

    async def delete_tenant(self, name: str) -> None:
        """Remove a tenant and its keys; its ledger rows stay."""
        async with self.transaction() as db:
            cursor = await db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise no_tenant(name)
            await _bump(db)

    async def _tenants(self, where: str, params: Sequence[Any]) -> list[Tenant]:
        rows = await self.db.execute_fetchall(
            f"SELECT name, {LIMIT_SELECT}, disabled, created_at, updated_at FROM tenants {where}",
            params,
        )
        return [Tenant(r[0], as_limits(r[1:6]), bool(r[6]), r[7], r[8]) for r in rows]

    # Keys --------------------------------------------------------------------------------

    async def create_key(
        self, secret: bytes, tenant: str, *, name: str = "", limits: Limits | None = None
    ) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: the stored record and the key itself (show it once)."""
        record, plaintext = new_key(secret, tenant, name, limits or Limits())
        async with self.transaction() as db:
            if not await self._scalar("SELECT 1 FROM tenants WHERE name = ?", (tenant,)):
                raise no_tenant(tenant)
            await db.execute(
                f"INSERT INTO api_keys (id, tenant, name, prefix, digest, {LIMIT_SELECT}, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, tenant, name, record.prefix, record.digest,
                 *limit_values(record.limits), record.created_at),
            )
            await _bump(db)
        return record, plaintext

    async def list_keys(self, tenant: str | None = None, *, active_only: bool = False) -> list[
        ApiKey
    ]:
        clauses, params = [], []
        if tenant is not None:
            clauses.append("tenant = ?")
            params.append(tenant)
        if active_only:
            clauses.append("revoked_at IS NULL")
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        return await self._keys(where + "ORDER BY tenant, created_at", params)

    async def get_key(self, key_id: str) -> ApiKey:
        rows = await self._keys("WHERE id = ?", (key_id,))
        if not rows:
            raise no_key(key_id)
        return rows[0]

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent); running gateways drop it on their next reload."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            if cursor.rowcount:
                await _bump(db)
        return await self.get_key(key_id)

    # The ledger ----------------------------------------------------------------------------

    async def write_usage(
        self, rows: Sequence[tuple[Any, ...]], failed: Sequence[tuple[Any, ...]] = (),
        refusals: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        async with self.transaction() as db:
            if rows:
                after = await self._scalar("SELECT coalesce(max(id), 0) FROM usage")
                await db.executemany(_INSERT_USAGE, rows)
                for statement in (_ROLL_UP, *rollups.FOLD_USAGE):
                    await db.execute(statement, {"after": after})
            if failed:
                await db.executemany(_INSERT_FAILED, failed)
            if refusals:
                after = await self._scalar("SELECT coalesce(max(id), 0) FROM refusals")
                await db.executemany(_INSERT_REFUSAL, refusals)
                await db.execute(rollups.FOLD_REFUSALS, {"after": after})

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.db.execute_fetchall(sql, params)]

    async def _keys(self, where: str, params: Sequence[Any]) -> list[ApiKey]:
        rows = await self.db.execute_fetchall(
            f"SELECT id, tenant, name, prefix, digest, {LIMIT_SELECT}, created_at, revoked_at "
            f"FROM api_keys {where}",
            params,
        )
        return [
            ApiKey(id=r[0], tenant=r[1], name=r[2], prefix=r[3], digest=r[4],
                   limits=as_limits(r[5:10]), created_at=r[10], revoked_at=r[11])
            for r in rows
        ]


def check_tenant_name(name: str) -> None:
    if not TENANT_NAME.fullmatch(name):
        raise InvalidRequest(
            "A tenant name is 1 to 63 characters: a-z, 0-9, '_', '.', '-'.", param="name"
        )


def tenant_exists(name: str) -> InvalidRequest:
    return InvalidRequest(f"Tenant {name!r} already exists.", param="name", code="tenant_exists")


MAX_KEY_NAME_CHARS = 200


def new_key(secret: bytes, tenant: str, name: str, limits: Limits) -> tuple[ApiKey, str]:
    """A fresh key for ``tenant``: its record (hash only) and the key itself."""
    if len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
        raise InvalidRequest(f"A key name is at most {MAX_KEY_NAME_CHARS} printable characters.",
                             param="name")
    plaintext = generate_key()
    record = ApiKey(
        id=generate_key_id(), tenant=tenant, name=name, prefix=key_prefix(plaintext),
        digest=hash_key(secret, plaintext), limits=limits, created_at=time.time(),
        revoked_at=None,
    )
    return record, plaintext


def no_tenant(name: str) -> NotFound:
    return NotFound(f"No tenant named {name!r}.", param="tenant")


def no_key(key_id: str) -> NotFound:
    return NotFound(f"No key with id {key_id!r}.", param="key_id")


def check_limit_changes(values: Mapping[str, Any]) -> dict[str, int | float | None]:
    """Validate limit values from a client (None removes a limit); raise ``InvalidRequest``."""
    out: dict[str, int | float | None] = {}
    for name, value in values.items():
        param = f"limits.{name}"
        if name not in LIMIT_FIELDS:
            raise InvalidRequest(f"Unknown limit {name!r}.", param=param)
        if value is None:
            out[name] = None
        elif name in INT_LIMITS:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
                raise field_error(param, f"an integer from 1 to {MAX_INT}, or null", value)
            out[name] = value
        else:
            # Not nan (which compares false), inf or an integer no float holds: the command
            # line's --daily-budget parses all three.
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= sys.float_info.max:
                raise field_error(param, "a finite amount of 0 or more, or null", value)
            out[name] = float(value)
    return out


def apply_limit_changes(base: Limits, changes: Mapping[str, int | float | None]) -> Limits:
    """``base`` with the validated ``changes`` applied."""
    return as_limits(changes.get(name, getattr(base, name)) for name in LIMIT_FIELDS)


async def _bump(db: aiosqlite.Connection) -> None:
    await db.execute(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'revision'"
    )


def limit_values(limits: Limits) -> tuple[int | float | None, ...]:
    return tuple(getattr(limits, name) for name in LIMIT_FIELDS)


def as_limits(values: Iterable[Any]) -> Limits:
    return Limits(*values)
