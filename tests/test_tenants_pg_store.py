"""Tests for gateway/tenants/pg_store.py: the tenants store and ledger on a real PostgreSQL,
held to the same answers as the SQLite store (gateway/tenants/store.py) for the same calls."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from gateway.core.config import parse
from gateway.core.errors import AuthenticationFailed, BudgetExceeded, InvalidRequest, NotFound
from gateway.core.postgres import Database, migrations
from gateway.core.tenant_settings import LedgerSettings, Limits
from gateway.core.toml_table import ConfigError
from gateway.tenants import ledger as ledger_module
from gateway.tenants.auth import Authenticator
from gateway.tenants.backend import TenantStore
from gateway.tenants.context import (
    TenantsConfig,
    admin_digest,
    create_default_tenant,
    load_admission,
    open_store,
)
from gateway.tenants.keys import hash_key
from gateway.tenants.ledger import Ledger, RefusalRecord, UsageRecord
from gateway.tenants.pg_store import PgStore
from gateway.tenants.store import MIGRATIONS, REFUSAL_COLUMNS, USAGE_COLUMNS, Store
from tests.tenant_fixtures import GATEWAY_ENV, SECRET, chat, principal, tenant_settings
from tests.test_tenants_keys import _cli

pytest_plugins = ["tests.postgres_fixtures"]

NOW = datetime.now(UTC).timestamp()


def row(i: int, **changes: object) -> UsageRecord:
    base = UsageRecord(
        request_id=f"req_{i}", tenant="acme", key_id="key_1", model="small", status=200,
        ts=NOW - i, route="chat", tier="cheap", deployment="p1/up-small", tokens_in=10 + i,
        tokens_out=5, cost=0.001 * i, escalations=0, attempts=1, latency_ms=12.5, ttft_ms=3.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


ROWS = [
    row(1, cost=0.5), row(2, model="big", tokens_in=100), row(3, cost=0.0, saved_cost=0.5,
                                                              cache="hit"),
    row(4, tenant="beta", key_id="key_9", cost=1.0, status=502, ttft_ms=None, estimated=True),
    row(5, ts=NOW - 40 * 86_400, cost=9.0), row(6, tenant="beta", status=429, cache="miss"),
]


@pytest.fixture
async def both(database: Database, tmp_path: Path) -> AsyncIterator[list[TenantStore]]:
    sqlite = await Store.open(tmp_path / "gateway.sqlite3")
    try:
        yield [sqlite, PgStore(database)]
    finally:
        await sqlite.close()


def test_the_ledger_columns_are_the_record_fields_in_order() -> None:
    assert tuple(f.name for f in fields(UsageRecord) if f.name != "failed") == USAGE_COLUMNS
    assert tuple(f.name for f in fields(RefusalRecord)) == REFUSAL_COLUMNS


async def test_ledger_queries_answer_the_same_on_postgres_as_on_sqlite(
    both: list[TenantStore],
) -> None:
    answers = []
    for store in both:
        ledger = Ledger(store, LedgerSettings(batch_rows=4))
        for r in ROWS:
            assert ledger.record(r)
        await ledger.close()
        answers.append((
            await ledger_module.recent(store),
            await ledger_module.recent(store, tenant="beta", status=429, since=NOW - 3600),
            await ledger_module.tenant_totals(store, now=NOW),
            await ledger_module.tenant_totals(store, tenant="acme", now=NOW),
            await ledger_module.spend_by_model(store, now=NOW),
            sorted(await ledger_module.month_spend(store, now=NOW), key=str),
        ))
    sqlite, postgres = answers
    assert postgres[0] == ROWS[::-1]  # every field back as it went in, newest id first
    assert [r.request_id for r in postgres[1]] == ["req_6"]
    assert postgres == sqlite
    acme = postgres[3][0]
    assert acme.today.requests == 3 and acme.today.cache_hits == 1
    assert isinstance(acme.today.requests, int)


async def test_tenants_and_keys_behave_as_on_sqlite(both: list[TenantStore]) -> None:
    for store in both:
        before = await store.revision()
        await store.create_tenant("acme", Limits(requests_per_minute=10))
        with pytest.raises(InvalidRequest) as exists:
            await store.create_tenant("acme")
        assert exists.value.code == "tenant_exists"
        with pytest.raises(InvalidRequest):
            await store.create_tenant("Not A Name")
        updated = await store.update_tenant(
            "acme", limits={"requests_per_minute": None, "daily_budget_usd": 2.5}, disabled=True
        )
        assert updated.limits == Limits(daily_budget_usd=2.5) and updated.disabled
        record, key = await store.create_key(SECRET, "acme", name="ci",
                                             limits=Limits(max_concurrent=2))
        assert key.startswith("gw-") and record.digest not in key
        assert await store.get_key(record.id) == record
        with pytest.raises(NotFound):
            await store.create_key(SECRET, "nobody")
        revoked = await store.revoke_key(record.id)
        assert revoked.revoked_at is not None
        assert await store.revoke_key(record.id) == revoked  # idempotent
        assert await store.list_keys("acme", active_only=True) == []
        assert [k.id for k in await store.list_keys()] == [record.id]
        assert await store.revision() == before + 4  # tenant, update, key, first revoke
        with pytest.raises(NotFound):
            await store.update_tenant("nobody", disabled=True)
        await store.delete_tenant("acme")
        with pytest.raises(NotFound):
            await store.delete_tenant("acme")
        assert await store.count_tenants() == 0 and await store.list_keys() == []


async def test_meta_is_claimed_once_by_replicas_starting_together(database: Database) -> None:
    stores = [PgStore(database) for _ in range(5)]
    claimed = await asyncio.gather(*(s.claim_meta("k", f"v{i}") for i, s in enumerate(stores)))
    assert len(set(claimed)) == 1 and claimed[0] in {f"v{i}" for i in range(5)}
    await stores[0].set_meta("k", "changed")
    assert await stores[1].get_meta("k") == "changed"


async def test_a_key_created_through_one_replica_authenticates_through_another(
    database: Database, tmp_path: Path,
) -> None:
    settings = tenant_settings(key_secret=SECRET.decode())
    first, secret = await open_store(settings, tmp_path / "a", database)
    second, _ = await open_store(settings, tmp_path / "b", database)
    await first.create_tenant("acme")
    record, key = await first.create_key(secret, "acme")
    auth = Authenticator(secret, None)
    await auth.reload(second)
    assert auth.authenticate(f"Bearer {key}").key_id == record.id
    await first.revoke_key(record.id)
    assert await second.revision() != auth.revision
    await auth.reload(second)
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(f"Bearer {key}")


async def test_budgets_start_from_the_shared_ledger(database: Database) -> None:
    store = PgStore(database)
    ledger = Ledger(store)
    ledger.record(row(1, cost=0.6, ts=NOW))
    ledger.record(row(2, cost=0.5, ts=NOW))
    await ledger.close()
    admission = await load_admission(PgStore(database), tenant_settings())
    who = principal("acme", "key_1", tenant_limits=Limits(daily_budget_usd=1.0))
    with pytest.raises(BudgetExceeded):
        await admission.admit(who, chat())


async def test_a_shared_database_needs_the_key_secret_from_the_environment(
    database: Database, tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="same secret"):
        await open_store(tenant_settings(key_secret=None), tmp_path, database)


async def test_replicas_starting_together_on_an_empty_database_bootstrap_once(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = tenant_settings(admin_key=None, bootstrap=True)
    config = TenantsConfig(settings, tmp_path)
    stores = [PgStore(database) for _ in range(3)]
    digests = await asyncio.gather(*(admin_digest(s, settings, SECRET) for s in stores))
    await asyncio.gather(*(create_default_tenant(s, config, SECRET) for s in stores))
    assert len(set(digests)) == 1
    assert [t.name for t in await stores[0].list_tenants()] == ["default"]
    assert len(await stores[0].list_keys("default")) == 1
    shown = capsys.readouterr().out
    assert shown.count("Admin key (shown once") == 1 and shown.count("API key for tenant") == 1


async def test_the_cli_manages_tenants_and_keys_in_the_shared_database(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = parse({
        "server": {"data_dir": str(tmp_path / "data")},
        "providers": [{"name": "demo", "kind": "demo"}],
        "models": [{"name": "m", "provider": "demo"}],
        "embedder": {"enabled": False},
        "cluster": {"database_url": database.settings.database_url},
    }, env=GATEWAY_ENV, base_dir=tmp_path, source="<test>")
    cli = partial(asyncio.to_thread, _cli, settings)  # the CLI runs its own event loop
    assert await cli("tenants", "create", "acme", "--rpm", "30") == 0
    assert await cli("keys", "create", "acme", "--name", "ci") == 0
    key = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gw-"))
    store = PgStore(database)
    (record,) = await store.list_keys("acme", active_only=True)
    assert record.digest == hash_key(SECRET, key)
    assert (await store.get_tenant("acme")).limits.requests_per_minute == 30
    assert await cli("keys", "revoke", record.id) == 0
    assert await store.list_keys("acme", active_only=True) == []
    assert await cli("keys", "create", "ghost") == 1
    assert "No tenant named 'ghost'" in capsys.readouterr().err
    assert not (tmp_path / "data" / "gateway.sqlite3").exists()  # nothing went to SQLite


_ROLL_UPS = {  # each table's rows in one order, with the columns both engines keep alike
    "usage_hourly": "SELECT * FROM usage_hourly ORDER BY 1, 2, 3, 4, 5, 6",
    "latency_hourly": "SELECT * FROM latency_hourly ORDER BY 1, 2, 3",
    "refusals_hourly": "SELECT * FROM refusals_hourly ORDER BY 1, 2, 3, 4, 5",
    "refusals": "SELECT ts, request_id, tenant, key_id, api, method, status, code, param, count "
                "FROM refusals ORDER BY id",
    "failed_attempts": "SELECT ts, request_id, deployment FROM failed_attempts ORDER BY id",
    "usage_daily": "SELECT * FROM usage_daily ORDER BY 1, 2, 3, 4",
}


async def roll_ups(store: TenantStore) -> dict[str, list[tuple[object, ...]]]:
    return {table: [tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                    for r in await store.fetch(sql)] for table, sql in _ROLL_UPS.items()}


HOURLY_ROWS = [
    *ROWS, row(7, api="embeddings", ttft_ms=None, answered_model="minilm"),
    row(8, api="messages", answered_model="small", failed=("p1/up-big", "p2/up-big")),
    row(9, ts=NOW - 7200, api="responses", deployment=None, route=None, escalations=1),
    row(10, status=502, failed=("p1/up-small",), deployment=None),
]
REFUSALS = [
    RefusalRecord(ts=NOW - 5, request_id="r1", api="/v1/chat/completions", method="POST",
                  status=401, code="invalid_api_key"),
    RefusalRecord(ts=NOW - 4, request_id="r2", api="/v1/messages", method="POST", status=429,
                  code="rate_limit_exceeded", tenant="acme", key_id="key_1"),
    RefusalRecord(ts=NOW - 3600 * 30, request_id="r3", api="(no route)", method="GET",
                  status=404, code="not_found", param="path"),
]


async def test_refusals_failed_attempts_and_hourly_roll_ups_are_written_as_on_sqlite(
    both: list[TenantStore],
) -> None:
    written = []
    for store in both:
        ledger = Ledger(store, LedgerSettings(batch_rows=3))
        for r in HOURLY_ROWS:
            assert ledger.record(r)
        for refusal in REFUSALS:
            ledger.refuse(refusal)
        await ledger.close()
        written.append(await roll_ups(store))
    sqlite, postgres = written
    assert postgres == sqlite
    assert len(postgres["refusals"]) == 3 and len(postgres["failed_attempts"]) == 3
    latency = sum(r[3] for r in postgres["latency_hourly"] if r[1] == "latency")
    assert latency == sum(r.status < 400 and r.api != "embeddings" for r in HOURLY_ROWS)
    assert sum(r[6] for r in postgres["usage_hourly"]) == len(HOURLY_ROWS)


async def test_migration_3_folds_the_rows_written_before_it_as_sqlite_does(
    database_url: str, tmp_path: Path,
) -> None:
    rows = [r for r in HOURLY_ROWS if r.api != "embeddings"]  # before it, no embeddings rows
    columns = USAGE_COLUMNS[:-1]  # no answered_model yet
    values = [ledger_module._row(r)[:-1] for r in rows]
    path = tmp_path / "gateway.sqlite3"
    with sqlite3.connect(path) as db:  # a SQLite ledger at schema 2, with rows
        for statement in (s for m in MIGRATIONS[:2] for s in m):
            db.execute(statement)
        db.executemany(f"INSERT INTO usage ({', '.join(columns)}) "
                       f"VALUES ({', '.join('?' * len(columns))})", values)
        db.execute("PRAGMA user_version = 2")
    conn = await asyncpg.connect(database_url)  # the shared database at migration 2, with rows
    try:
        await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for m in migrations()[:2]:
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                               m.version, m.name)
        await conn.copy_records_to_table("usage", records=values, columns=columns)
    finally:
        await conn.close()
    sqlite, database = await Store.open(path), await Database.open_url(database_url)
    try:
        on_sqlite, on_postgres = await roll_ups(sqlite), await roll_ups(PgStore(database))
    finally:
        await sqlite.close()
        await database.close()
    folded = {t: on_postgres[t] for t in ("usage_hourly", "latency_hourly")}
    assert folded == {t: on_sqlite[t] for t in folded}
    assert sum(r[6] for r in folded["usage_hourly"]) == len(rows)
