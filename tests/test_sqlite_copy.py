"""Tests for gateway/core/sqlite_copy.py and ``gateway migrate`` (gateway/core/migrate_cli.py):
an embedded deployment's SQLite files copied into a real PostgreSQL, then read back through the
PostgreSQL backends exactly as the SQLite ones read them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np

from embedder_worker.model import OnnxEmbedder
from gateway.cache.pg_store import PgCacheStore
from gateway.cache.semantic_cache import SemanticCache
from gateway.cache.store import CacheStore
from gateway.core.postgres import Database, migrations
from gateway.core.sqlite_copy import SqliteFiles, copy_sqlite
from gateway.core.tenant_settings import Limits
from gateway.routing.pg_signals import PgSignalSink
from gateway.routing.signals import SignalStore
from gateway.tenants.ledger import Ledger, RefusalRecord, UsageRecord, recent, tenant_totals
from gateway.tenants.pg_store import PgStore
from gateway.tenants.store import Store
from tests.cache_fixtures import CONTEXT, SPACE, answer, load_embedder, settings_in
from tests.conftest import ROOT
from tests.tenant_fixtures import SECRET
from tests.test_routing_signals import DAY_S, DECISION, NOW, make_version_2

pytest_plugins = ["tests.postgres_fixtures"]

STORED, ASKED = "How do I reset my password?", "How can I reset my password?"
_LEDGER_TABLES = (
    "SELECT id, ts, request_id, deployment FROM failed_attempts ORDER BY id",
    "SELECT id, ts, request_id, tenant, api, status, code, count FROM refusals ORDER BY id",
    "SELECT hour, model, answered_model, deployment, route, api, requests, errors, cost "
    "FROM usage_hourly ORDER BY 1, 2, 3, 4, 5, 6",
    "SELECT hour, metric, bucket, count FROM latency_hourly ORDER BY 1, 2, 3",
    "SELECT hour, tenant, api, status, code, count FROM refusals_hourly ORDER BY 1, 2, 3, 4, 5",
)


async def embedded_deployment(data_dir: Path, embedder: OnnxEmbedder) -> None:
    """What a gateway on SQLite leaves in its data folder: tenants, keys, usage (with failed
    attempts, refusals and roll-ups), cache, signals."""
    store = await Store.open(data_dir / "gateway.sqlite3")
    await store.create_tenant("acme", Limits(requests_per_minute=60))
    await store.create_tenant("beta", Limits(daily_budget_usd=1.5))
    record, _ = await store.create_key(SECRET, "acme", name="ci")
    await store.create_key(SECRET, "beta")
    await store.revoke_key(record.id)
    await store.set_meta("admin_key_digest", "d" * 64)
    ledger = Ledger(store)
    for i in range(30):
        ledger.record(UsageRecord(f"req_{i}", "acme" if i % 3 else "beta", "key_1", "small",
                                  200 if i % 7 else 502, 1_700_000_000.0 + i, tokens_in=i,
                                  cost=0.01 * i, estimated=i % 2 == 0,
                                  cache="hit" if i % 5 == 0 else None, latency_ms=1.5 * i,
                                  failed=() if i % 7 else ("p/a",)))
    ledger.refuse(RefusalRecord(1_700_000_050.0, "ref_1", "/v1/chat/completions", "POST", 401,
                                "invalid_api_key"))
    await ledger.close()
    await store.close()
    cache = await SemanticCache.open(settings_in(data_dir), SPACE)
    vectors = embedder.embed([STORED, "What is 2+2?"])
    await cache.store("t", CONTEXT, STORED, vectors[0], answer("Click 'forgot'."))
    await cache.store("t", CONTEXT, "What is 2+2?", None, answer("4"))
    await cache.close()
    signals = await SignalStore.open(data_dir / "signals.sqlite3", model="m")
    signals.decision("req_1", DECISION, "fix my code", np.arange(4, dtype=np.float32))
    await signals.close()


async def gateway_migrate(*args: str, url: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "migrate", *args, cwd=ROOT,
        env={**os.environ, "GATEWAY_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_migrate_applies_the_schema_once_and_reports_it(database_url: str) -> None:
    code, out, _ = await gateway_migrate(url=database_url)
    versions = [m.version for m in migrations()]
    assert code == 0 and f"applied {len(versions)} migration(s) now " \
        f"({', '.join(map(str, versions))})" in out
    code, out, _ = await gateway_migrate(url=database_url)
    assert code == 0 and "applied 0 migration(s) now" in out


async def test_an_embedded_deployment_copies_over_and_reads_back_the_same(
    database_url: str, tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    embedder = load_embedder()
    await embedded_deployment(data_dir, embedder)
    code, out, err = await gateway_migrate("--from-sqlite", str(data_dir), url=database_url)
    assert code == 0, err
    assert "copied 30 rows into usage" in out and "copied 2 rows into cache_entries" in out
    database = await Database.open_url(database_url)
    sqlite = await Store.open(data_dir / "gateway.sqlite3")
    try:
        shared = PgStore(database)
        assert await shared.list_tenants() == await sqlite.list_tenants()
        assert await shared.list_keys() == await sqlite.list_keys()
        assert await shared.get_meta("admin_key_digest") == "d" * 64
        assert await recent(shared, limit=100) == await recent(sqlite, limit=100)
        now = 1_700_000_100.0
        assert await tenant_totals(shared, now=now) == await tenant_totals(sqlite, now=now)
        for sql in _LEDGER_TABLES:
            assert await shared.fetch(sql) == await sqlite.fetch(sql), sql
        await shared.create_tenant("gamma")  # the revision and the sequences carry on
        ledger = Ledger(shared)
        ledger.record(UsageRecord("after", "gamma", "k", "small", 200, now, failed=("p/b",)))
        ledger.refuse(RefusalRecord(now, "ref_2", "/v1/embeddings", "POST", 400, "bad"))
        await ledger.close()
        assert (await recent(shared, limit=1))[0].request_id == "after"
        assert await database.scalar("SELECT max(id) FROM refusals") == 2
        assert await database.scalar("SELECT count(*) FROM failed_attempts") == 6
        await assert_cache_copied(database, data_dir, embedder, tmp_path)
        assert await database.scalar("SELECT count(*) FROM signals") == 1
        assert await database.scalar("SELECT dim FROM signal_vectors") == 4
    finally:
        await sqlite.close()
        await database.close()
    code, _, err = await gateway_migrate("--from-sqlite", str(data_dir), url=database_url)
    assert code == 1 and "already has rows in tenants" in err


async def assert_cache_copied(database: Database, data_dir: Path, embedder: OnnxEmbedder,
                              tmp_path: Path) -> None:
    sqlite = await CacheStore.open(data_dir / "cache.sqlite3")
    shared = await PgCacheStore.open(database)
    try:
        assert [e async for e in shared.entries()] == [e async for e in sqlite.entries()]
        assert await shared.meta("vector_space") == await sqlite.meta("vector_space")
    finally:
        await sqlite.close()
    cache = await SemanticCache.open(settings_in(tmp_path / "replica"), SPACE, store=shared)
    try:
        hit = await cache.lookup("t", CONTEXT, ASKED, embedder.embed([ASKED])[0], "semantic")
        assert hit is not None and hit.kind == "semantic" and hit.text == STORED
    finally:
        await cache.close()


async def test_vectors_of_a_version_2_file_keep_their_last_use_when_copied(
    database: Database, tmp_path: Path,
) -> None:
    """Version 2 kept a vector's first write as its ts. Copied into a database whose migration
    4 already ran, it must take its last use, or the sweep takes a vector still in use."""
    path = tmp_path / "signals.sqlite3"
    await make_version_2(path)
    missing = tmp_path / "none.sqlite3"
    copied = await copy_sqlite(database, SqliteFiles(missing, missing, path))
    assert (copied["signals"], copied["signal_vectors"]) == (2, 1)
    shared = SignalStore(PgSignalSink(database), model="m", retention_s=30 * DAY_S,
                         clock=lambda: NOW)
    try:
        assert await shared.sweep() == 1
    finally:
        await shared.close()
    assert await database.pool.fetchval("SELECT ts FROM signal_vectors") == NOW - 60
