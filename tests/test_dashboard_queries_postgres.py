"""Tests for gateway/dashboard_queries.py on both engines: the same ledger rows in SQLite and in a
real PostgreSQL give the dashboard exactly the same figures (summaries, percentiles, time buckets
with rows on their edges, counts, filters, tenants' use and budgets), over the raw rows of the
last hour and over a week read from the hourly roll-ups (with refusals and failed attempts)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import astuple, is_dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.core.postgres import Database
from gateway.core.tenant_settings import LedgerSettings, Limits
from gateway.observability.dashboard import queries as q
from gateway.observability.dashboard.refusals import (
    UNAUTHENTICATED,
    latest_refusals,
    refusal_counts,
    refusals_by_tenant,
)
from gateway.tenants.backend import TenantStore
from gateway.tenants.ledger import Ledger, RefusalRecord, UsageRecord, day_of
from gateway.tenants.pg_store import PgStore
from gateway.tenants.store import Store
from tests.tenant_fixtures import SECRET

pytest_plugins = ["tests.postgres_fixtures"]

NOW = 1_750_000_000.0  # fixed: bucket edges fall where the test puts rows
SINCE = NOW - 3600


def ledger_rows(count: int = 400) -> list[UsageRecord]:
    rng = random.Random(7)
    rows = []
    for i in range(count):
        # Every tenth row sits exactly on a 120 s bucket edge, where a rounding cast would
        # put it in the next bucket.
        ts = SINCE + 120 * (i % 30) if i % 10 == 0 else SINCE + rng.uniform(0, 3600)
        rows.append(UsageRecord(
            request_id=f"r{i}", tenant=rng.choice(["acme", "beta"]), key_id="k",
            model=rng.choice(["small", "big"]), status=rng.choice([200] * 8 + [429, 502]),
            ts=ts, route=rng.choice(["chat", "code", None]), tier="cheap",
            deployment=rng.choice(["p/a", "p/b"]), tokens_in=rng.randint(1, 500),
            tokens_out=rng.randint(1, 900), cost=rng.uniform(0, 0.01), estimated=i % 3 == 0,
            cache=rng.choice(["hit", "miss", "bypass", None]),
            saved_cost=rng.uniform(0, 0.01), escalations=rng.choice([0, 0, 1]), attempts=1,
            latency_ms=rng.uniform(5, 900), ttft_ms=rng.choice([None, rng.uniform(1, 50)]),
        ))
    return rows


@pytest.fixture
async def both(database: Database, tmp_path: Path) -> AsyncIterator[list[TenantStore]]:
    sqlite = await Store.open(tmp_path / "gateway.sqlite3")
    stores: list[TenantStore] = [sqlite, PgStore(database)]
    try:
        for store in stores:
            await store.create_tenant("acme", Limits(daily_budget_usd=1.0,
                                                     monthly_budget_usd=3.0))
            await store.create_tenant("beta")
            await store.create_key(SECRET, "acme")
            ledger = Ledger(store, LedgerSettings(batch_rows=64))
            for row in ledger_rows():
                assert ledger.record(row)
            await ledger.close()
        yield stores
    finally:
        await sqlite.close()


async def figures(store: TenantStore) -> dict[str, Any]:
    return {
        "summary": await q.summary(store, SINCE, NOW),
        "percentiles": await q.percentiles(store, SINCE, NOW),
        "ttft": await q.percentiles(store, SINCE, NOW, "ttft_ms"),
        "by_route": await q.percentiles_by(store, "route", SINCE, NOW),
        "by_status": await q.percentiles_by(store, "status", SINCE, NOW),
        "buckets": await q.buckets(store, SINCE, NOW, 120),
        "counts_by_cache": await q.counts_by(store, "cache", SINCE, NOW),
        "counts_by_status": await q.counts_by(store, "status", SINCE, NOW),
        "tenants": comparable(await q.tenant_usage(store, NOW)),
        "budgets": await q.budget_usage(store, NOW),
        "errors": await q.find_requests(store, q.RequestFilter(status="error", route="none")),
        "acme_hits": await q.find_requests(store, q.RequestFilter(
            tenant="acme", cache="hit", since=SINCE + 1800, limit=20)),
        "models": await q.models_since(store, day_of(SINCE)),
        "deployments": await q.distinct_values(store, "deployment", SINCE),
        "statuses": await q.distinct_values(store, "status", SINCE),
        "overall": await q.overall_totals(store, NOW),
    }


def comparable(usage: list[q.TenantUsage]) -> list[tuple[Any, ...]]:
    """Tenants' own timestamps differ between the two stores (made a moment apart)."""
    return [(u.tenant.name, u.tenant.limits, u.today, u.month, u.minute_requests,
             u.minute_tokens, u.active_keys) for u in usage]


def rounded(value: Any) -> Any:
    """Sums of floats agree to rounding: the engines add the same numbers in other orders."""
    if is_dataclass(value) and not isinstance(value, type):
        return rounded(astuple(value))
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 9) if isinstance(value, float) else value


async def test_every_dashboard_figure_is_the_same_on_postgres_as_on_sqlite(
    both: list[TenantStore],
) -> None:
    sqlite, postgres = [await figures(store) for store in both]
    for name in sqlite:
        assert rounded(postgres[name]) == rounded(sqlite[name]), name
    buckets = postgres["buckets"]
    assert len(buckets) == 30 and sum(b.requests for b in buckets) == 400
    assert all(isinstance(b.requests, int) for b in buckets)
    assert postgres["summary"].requests == 400 and postgres["summary"].errors > 0
    assert postgres["percentiles"].p50 is not None and set(postgres["statuses"]) == {
        "200", "429", "502"}
    assert [(b.tenant, b.period) for b in postgres["budgets"]] == [("acme", "day"),
                                                                   ("acme", "month")]


WEEK_NOW = NOW + 1234.5  # inside an hour: a week's window has partial hours at both ends
WEEK = 7 * 86_400


def week_rows(count: int = 600) -> list[UsageRecord]:
    """A week of rows of every API, some with failed attempts before them."""
    rng = random.Random(11)
    rows = []
    for i in range(count):
        api = rng.choice(["chat", "chat", "messages", "responses", "embeddings"])
        ok = rng.random() < 0.85
        rows.append(UsageRecord(
            request_id=f"w{i}", tenant=rng.choice(["acme", "beta"]), key_id="k",
            model=rng.choice(["auto", "small", "big"]), status=200 if ok else 502,
            ts=WEEK_NOW - rng.uniform(0, WEEK + 7200), route=rng.choice(["chat", None]),
            deployment=rng.choice(["p/a", "p/b", None]), tokens_in=rng.randint(1, 500),
            tokens_out=rng.randint(0, 900), cost=rng.uniform(0, 0.01),
            cache=rng.choice(["hit", "miss", "bypass", None]), escalations=rng.choice([0, 1]),
            latency_ms=rng.uniform(2, 3000), ttft_ms=rng.choice([None, rng.uniform(1, 80)]),
            api=api, answered_model=rng.choice(["small", "big", None]),
            failed=tuple(rng.sample(["p/a", "p/b"], rng.choice([0, 0, 1, 2]))),
        ))
    return rows


def week_refusals(count: int = 300) -> list[RefusalRecord]:
    rng = random.Random(12)
    return [RefusalRecord(
        ts=WEEK_NOW - rng.uniform(0, WEEK), request_id=f"x{i}",
        api=rng.choice(["/v1/chat/completions", "/v1/embeddings", "(no route)"]), method="POST",
        status=rng.choice([400, 401, 429]), code=rng.choice(["invalid_api_key", "bad"]),
        tenant=rng.choice(["acme", None]), key_id=None, param=None,
    ) for i in range(count)]


@pytest.fixture
async def both_weeks(database: Database, tmp_path: Path) -> AsyncIterator[list[TenantStore]]:
    sqlite = await Store.open(tmp_path / "gateway.sqlite3")
    stores: list[TenantStore] = [sqlite, PgStore(database)]
    try:
        for store in stores:
            await store.create_tenant("acme")
            ledger = Ledger(store, LedgerSettings(batch_rows=50, refusal_rows_per_minute=1))
            for row in week_rows():
                assert ledger.record(row)
            for refusal in sorted(week_refusals(), key=lambda r: r.ts):
                ledger.refuse(refusal)
            ledger.refuse(replace(week_refusals(1)[0], ts=WEEK_NOW - 100))
            ledger.refuse(replace(week_refusals(1)[0], ts=WEEK_NOW - 99))  # folded: cap is 1
            await ledger.close()
        yield stores
    finally:
        await sqlite.close()


async def week_figures(store: TenantStore) -> dict[str, Any]:
    since = WEEK_NOW - WEEK
    start = since - since % 3600  # as the overview's buckets start: on an hour
    return {
        "summary": await q.summary(store, since, WEEK_NOW),
        "percentiles": await q.percentiles(store, since, WEEK_NOW),
        "ttft": await q.percentiles(store, since, WEEK_NOW, "ttft_ms"),
        "day": await q.percentiles(store, WEEK_NOW - 86_400, WEEK_NOW),
        "buckets": await q.buckets(store, start, start + WEEK + 3600, 6 * 3600),
        "by_model": await q.counts_by(store, "model", since, WEEK_NOW),
        "by_api": await q.counts_by(store, "api", since, WEEK_NOW),
        "by_tenant": await q.counts_by(store, "tenant", since, WEEK_NOW),
        "models": await q.model_counts(store, since, WEEK_NOW),
        "deployments": await q.distinct_values(store, "deployment", since),
        "failed": await q.failed_attempts(store, since, WEEK_NOW),
        "refused": await refusal_counts(store, since, WEEK_NOW),
        "refused_by_tenant": await refusals_by_tenant(store, since, WEEK_NOW),
        "latest_refusals": await latest_refusals(store, tenant=UNAUTHENTICATED, limit=20),
    }


async def test_week_windows_from_the_roll_ups_are_the_same_on_postgres_as_on_sqlite(
    both_weeks: list[TenantStore],
) -> None:
    sqlite, postgres = [await week_figures(store) for store in both_weeks]
    for name in sqlite:
        assert rounded(postgres[name]) == rounded(sqlite[name]), name
    rows = [r for r in week_rows() if WEEK_NOW - WEEK <= r.ts < WEEK_NOW]
    assert postgres["summary"].requests == len(rows)
    assert postgres["percentiles"].approximate and postgres["percentiles"].p50 is not None
    assert sum(postgres["failed"].values()) == sum(len(r.failed) for r in rows)
    assert sum(r.count for r in postgres["refused"]) == len(
        [r for r in week_refusals() if r.ts >= WEEK_NOW - WEEK]) + 2
    assert {m.answered for m in postgres["models"]} == {"small", "big", q.NULL_LABEL}
