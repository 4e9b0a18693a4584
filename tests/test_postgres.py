"""Tests for gateway/core/postgres.py: migrations on a real PostgreSQL, applied once however many
replicas start together, and the shared-SQL helpers."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from gateway.core.cluster import ClusterSettings
from gateway.core.postgres import Database, DatabaseError, migrations, plain, positional

pytest_plugins = ["tests.postgres_fixtures"]


def cluster(url: str) -> ClusterSettings:
    return ClusterSettings(database_url=url, database_pool_size=2, database_timeout_s=5.0)


async def recorded(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(r[0], r[1]) for r in rows]


def test_packaged_migrations_are_numbered_from_one_without_gaps() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert all(m.sql.strip() for m in found)


async def test_migrating_again_applies_nothing_and_keeps_the_data(database_url: str) -> None:
    first = await Database.open(cluster(database_url))
    try:
        await first.pool.execute("INSERT INTO tenants (name, created_at, updated_at) "
                                 "VALUES ('acme', 1, 1)")
        assert await first.migrate() == []
    finally:
        await first.close()
    again = await Database.open(cluster(database_url))
    try:
        assert await again.scalar("SELECT count(*) FROM tenants") == 1
    finally:
        await again.close()
    expected = [(m.version, m.name) for m in migrations()]
    assert await recorded(database_url) == expected


async def test_replicas_starting_together_apply_each_migration_once(database_url: str) -> None:
    opened = await asyncio.gather(
        *(Database.open(cluster(database_url), migrate=False) for _ in range(4))
    )
    try:
        applied = await asyncio.gather(*(db.migrate() for db in opened))
    finally:
        for db in opened:
            await db.close()
    versions = [m.version for m in migrations()]
    assert sorted(v for run in applied for v in run) == versions  # each once, by one of them
    assert [v for v, _ in await recorded(database_url)] == versions


async def test_an_unreachable_database_is_a_clear_error_without_the_password(
    postgres_server: object,
) -> None:
    with pytest.raises(DatabaseError) as error:
        await Database.open(ClusterSettings(
            database_url="postgresql://u:hunter2-secret@127.0.0.1:1/db", database_timeout_s=2.0,
        ))
    assert "cannot connect" in str(error.value) and "hunter2" not in str(error.value)


async def test_shared_queries_take_sqlite_placeholders_and_give_sqlite_values(
    database: Database,
) -> None:
    assert positional("a = ? AND b IN (?, ?)") == "a = $1 AND b IN ($2, $3)"
    assert plain(Decimal("3")) == 3 and isinstance(plain(Decimal("3")), int)
    assert plain(Decimal("2.5")) == 2.5
    rows = await database.fetch("SELECT sum(x), ? || 'b' FROM (VALUES (1::bigint), (2)) v(x)",
                                ["a"])
    assert rows == [(3, "ab")] and isinstance(rows[0][0], int)


async def test_a_schema_newer_than_the_gateway_is_refused(database: Database) -> None:
    newest = migrations()[-1].version
    await database.pool.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from_the_future')", newest + 1
    )
    with pytest.raises(DatabaseError, match="newer than this gateway"):
        await database.migrate()
