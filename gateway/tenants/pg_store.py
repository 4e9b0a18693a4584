"""The tenants store on the shared PostgreSQL database: tenants, keys, meta and the ledger.

The same operations as the SQLite ``store.Store`` (``backend.TenantStore``), for several
replicas at once: every change to tenants or keys bumps ``meta.revision`` in its transaction, and
each replica's reload watcher polls that one row, so a key created or revoked through one replica
is honoured by the others within their ``reload_interval_s``. Ledger batches (usage rows, failed
attempts, refusals) go in with COPY and are folded into ``usage_daily`` and the hourly roll-ups
(``rollups.py``) by upserts in the same transaction: summed in Python from the batch itself,
since another replica's rows may commit between two statements of this one. Touches only the
tables of ``gateway/core/migrations`` that it names; the schema itself is
``Database.migrate``'s job.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg

from gateway.core.postgres import Database
from gateway.core.sqlite import Params
from gateway.core.tenant_settings import Limits
from gateway.tenants import rollups
from gateway.tenants.ledger import day_of
from gateway.tenants.store import (
    FAILED_COLUMNS,
    LIMIT_SELECT,
    REFUSAL_COLUMNS,
    USAGE_COLUMNS,
    ApiKey,
    Tenant,
    as_limits,
    check_limit_changes,
    check_tenant_name,
    limit_values,
    new_key,
    no_key,
    no_tenant,
    tenant_exists,
)

_BUMP = "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'revision'"
_COLUMN = {name: i for i, name in enumerate(USAGE_COLUMNS)}
_UPSERT_DAILY = """
INSERT INTO usage_daily (day, tenant, key_id, model, requests, errors, cache_hits,
                         tokens_in, tokens_out, cost, saved_cost, latency_ms_sum)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET
    requests = usage_daily.requests + excluded.requests,
    errors = usage_daily.errors + excluded.errors,
    cache_hits = usage_daily.cache_hits + excluded.cache_hits,
    tokens_in = usage_daily.tokens_in + excluded.tokens_in,
    tokens_out = usage_daily.tokens_out + excluded.tokens_out,
    cost = usage_daily.cost + excluded.cost,
    saved_cost = usage_daily.saved_cost + excluded.saved_cost,
    latency_ms_sum = usage_daily.latency_ms_sum + excluded.latency_ms_sum
"""


def _upsert(table: str, key: tuple[str, ...], sums: tuple[str, ...]) -> str:
    """Add ``sums`` into ``table``'s row of ``key``, or insert it."""
    columns = (*key, *sums)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {added}")


_UPSERT_USAGE_HOURLY = _upsert(
    "usage_hourly", ("hour", "model", "answered_model", "deployment", "route", "api"),
    rollups.USAGE_SUMS)
_UPSERT_LATENCY_HOURLY = _upsert("latency_hourly", ("hour", "metric", "bucket"), ("count",))
_UPSERT_REFUSALS_HOURLY = _upsert(
    "refusals_hourly", ("hour", "tenant", "api", "status", "code"), ("count",))


class PgStore:
    """Tenants, keys and the ledger in PostgreSQL, through the process's shared pool."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._pool = database.pool

    async def close(self) -> None:
        """Nothing of its own to close: the pool belongs to the database's cleanup context."""

    async def data_version(self) -> int:
        return await self.revision()

    async def revision(self) -> int:
        return int(await self._pool.fetchval("SELECT value FROM meta WHERE key = 'revision'"))

    async def get_meta(self, key: str) -> str | None:
        value = await self._pool.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        await self._pool.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value,
        )

    async def claim_meta(self, key: str, value: str) -> str:
        await self._pool.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key, value,
        )
        return str(await self.get_meta(key))

    # Tenants -----------------------------------------------------------------------------

    async def create_tenant(self, name: str, limits: Limits | None = None) -> Tenant:
        limits = limits or Limits()
        check_tenant_name(name)
        now = time.time()
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    f"INSERT INTO tenants (name, {LIMIT_SELECT}, created_at, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    name, *limit_values(limits), now, now,
                )
            except asyncpg.UniqueViolationError as exc:
                raise tenant_exists(name) from exc
            await conn.execute(_BUMP)
        return Tenant(name, limits, False, now, now)

    async def get_tenant(self, name: str) -> Tenant:
        rows = await self._tenants("WHERE name = $1", (name,))
        if not rows:
            raise no_tenant(name)
        return rows[0]

    async def list_tenants(self) -> list[Tenant]:
        return await self._tenants("ORDER BY name", ())

    async def count_tenants(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM tenants"))

    async def update_tenant(
        self, name: str, *, limits: Mapping[str, int | float | None] | None = None,
        disabled: bool | None = None,
    ) -> Tenant:
        changes: dict[str, Any] = dict(check_limit_changes(limits or {}))
        if disabled is not None:
            changes["disabled"] = disabled
        assignments = "".join(f"{column} = ${i}, " for i, column in enumerate(changes, start=1))
        n = len(changes)
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE tenants SET {assignments}updated_at = ${n + 1} WHERE name = ${n + 2}",
                *changes.values(), time.time(), name,
            )
            if status.endswith(" 0"):
                raise no_tenant(name)
            await conn.execute(_BUMP)
        return await self.get_tenant(name)

    async def delete_tenant(self, name: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM tenants WHERE name = $1", name)
            if status.endswith(" 0"):
                raise no_tenant(name)
            await conn.execute(_BUMP)

    async def _tenants(self, where: str, params: Sequence[Any]) -> list[Tenant]:
        rows = await self._pool.fetch(
            f"SELECT name, {LIMIT_SELECT}, disabled, created_at, updated_at FROM tenants {where}",
            *params,
        )
        return [Tenant(r[0], as_limits(r[1:6]), bool(r[6]), r[7], r[8]) for r in rows]

    # Keys --------------------------------------------------------------------------------

    async def create_key(
        self, secret: bytes, tenant: str, *, name: str = "", limits: Limits | None = None
    ) -> tuple[ApiKey, str]:
        record, plaintext = new_key(secret, tenant, name, limits or Limits())
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    f"INSERT INTO api_keys (id, tenant, name, prefix, digest, {LIMIT_SELECT}, "
                    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    record.id, tenant, name, record.prefix, record.digest,
                    *limit_values(record.limits), record.created_at,
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise no_tenant(tenant) from exc
            await conn.execute(_BUMP)
        return record, plaintext

    async def list_keys(
        self, tenant: str | None = None, *, active_only: bool = False
    ) -> list[ApiKey]:
        clauses, params = [], []
        if tenant is not None:
            params.append(tenant)
            clauses.append("tenant = $1")
        if active_only:
            clauses.append("revoked_at IS NULL")
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        return await self._keys(where + "ORDER BY tenant, created_at", params)

    async def get_key(self, key_id: str) -> ApiKey:
        rows = await self._keys("WHERE id = $1", (key_id,))
        if not rows:
            raise no_key(key_id)
        return rows[0]

    async def revoke_key(self, key_id: str) -> ApiKey:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                time.time(), key_id,
            )
            if not status.endswith(" 0"):
                await conn.execute(_BUMP)
        return await self.get_key(key_id)

    async def _keys(self, where: str, params: Sequence[Any]) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"SELECT id, tenant, name, prefix, digest, {LIMIT_SELECT}, created_at, revoked_at "
            f"FROM api_keys {where}",
            *params,
        )
        return [
            ApiKey(id=r[0], tenant=r[1], name=r[2], prefix=r[3], digest=r[4],
                   limits=as_limits(r[5:10]), created_at=r[10], revoked_at=r[11])
            for r in rows
        ]

    # The ledger ----------------------------------------------------------------------------

    async def write_usage(
        self, rows: Sequence[tuple[Any, ...]], failed: Sequence[tuple[Any, ...]] = (),
        refusals: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if rows:
                await conn.copy_records_to_table("usage", records=rows, columns=USAGE_COLUMNS)
                await fold_usage(conn, rows)
            if failed:
                await conn.copy_records_to_table("failed_attempts", records=failed,
                                                 columns=FAILED_COLUMNS)
            if refusals:
                await conn.copy_records_to_table("refusals", records=refusals,
                                                 columns=REFUSAL_COLUMNS)
                await conn.executemany(_UPSERT_REFUSALS_HOURLY, rollups.refusals_hourly_rows(
                    rollups.as_dicts(REFUSAL_COLUMNS, refusals)))

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return await self.database.fetch(sql, params)


class Batcher(Protocol):
    """What ``fold_usage`` needs of a connection (a pooled one is a proxy, not a Connection)."""

    async def executemany(self, command: str, args: Iterable[Sequence[Any]]) -> None: ...


async def fold_usage(conn: Batcher, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add ledger rows just written into the daily and hourly roll-ups (in their transaction)."""
    await conn.executemany(_UPSERT_DAILY, roll_up(rows))
    named = rollups.as_dicts(USAGE_COLUMNS, rows)
    await conn.executemany(_UPSERT_USAGE_HOURLY, rollups.usage_hourly_rows(named))
    await conn.executemany(_UPSERT_LATENCY_HOURLY, rollups.latency_hourly_rows(named))


def roll_up(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Ledger rows summed per UTC day, tenant, key and model, as ``usage_daily`` rows."""
    c = _COLUMN
    sums: defaultdict[tuple[str, str, str, str], list[Any]] = defaultdict(
        lambda: [0, 0, 0, 0, 0, 0.0, 0.0, 0.0]
    )
    for r in rows:
        s = sums[(day_of(r[c["ts"]]), r[c["tenant"]], r[c["key_id"]], r[c["model"]])]
        s[0] += 1
        s[1] += r[c["status"]] >= 400
        s[2] += r[c["cache"]] == "hit"
        s[3] += r[c["tokens_in"]]
        s[4] += r[c["tokens_out"]]
        s[5] += r[c["cost"]]
        s[6] += r[c["saved_cost"]]
        s[7] += r[c["latency_ms"]]
    return [(*key, *(int(v) if i < 5 else v for i, v in enumerate(s)))
            for key, s in sums.items()]
