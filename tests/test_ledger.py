"""Tests for gateway/tenants/ledger.py: batched writes, roll-ups, queries, restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.errors import BudgetExceeded
from gateway.core.tenant_settings import LedgerSettings, Limits
from gateway.tenants import ledger as ledger_module
from gateway.tenants.context import load_admission
from gateway.tenants.ledger import (
    Ledger,
    RefusalRecord,
    UsageRecord,
    month_spend,
    recent,
    spend_by_model,
)
from gateway.tenants.store import Store
from tests.tenant_fixtures import chat, open_store, principal, tenant_settings

NOW = datetime.now(UTC).timestamp()


def row(i: int = 0, **fields: object) -> UsageRecord:
    base = UsageRecord(
        request_id=f"req_{i}", tenant="acme", key_id="key_1", model="small", status=200,
        ts=NOW, route="chat", tier="cheap", deployment="p1/up-small", tokens_in=10,
        tokens_out=5, cost=0.001, escalations=0, attempts=1, latency_ms=12.5, ttft_ms=3.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path) as s:
        yield s


async def test_rows_survive_close_and_reopen(tmp_path: Path) -> None:
    records = [row(i, cache="hit" if i == 0 else "miss", cost=0.0 if i == 0 else 0.002,
                   saved_cost=0.002 if i == 0 else 0.0, estimated=i == 1, ttft_ms=None)
               for i in range(3)]
    async with open_store(tmp_path) as store:
        ledger = Ledger(store)
        ledger.start()
        for record in records:
            assert ledger.record(record)
        await ledger.close()
    async with open_store(tmp_path) as store:
        assert await recent(store) == records[::-1]


async def test_a_full_batch_is_written_before_the_interval(store: Store) -> None:
    ledger = Ledger(store, LedgerSettings(flush_interval_s=3600, batch_rows=10))
    ledger.start()
    try:
        for i in range(10):
            ledger.record(row(i))
        await asyncio.wait_for(ledger.wait_written(10), 10)
        assert len(await recent(store)) == 10
    finally:
        await ledger.close()


async def test_rows_that_arrive_during_a_write_wait_for_the_next_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer takes what is queued when it wakes, so that under steady load it writes a
    few full batches, not one transaction after another of the few rows that came meanwhile."""
    ledger = Ledger(store, LedgerSettings(flush_interval_s=3600, batch_rows=10))
    real_write = ledger._write
    sizes: list[int] = []

    async def write(batch: list[ledger_module._Queued]) -> None:
        sizes.append(len(batch))
        if len(sizes) == 1:
            for i in range(100, 103):  # three requests finish while the first batch is written
                ledger.record(row(i))
        await real_write(batch)

    monkeypatch.setattr(ledger, "_write", write)
    ledger.start()
    try:
        for i in range(10):
            ledger.record(row(i))
        await asyncio.wait_for(ledger.wait_written(10), 10)
        for i in range(10, 17):  # with the three, a full batch again
            ledger.record(row(i))
        await asyncio.wait_for(ledger.wait_written(20), 10)
        assert sizes == [10, 10]
    finally:
        await ledger.close()
    assert len(await recent(store, limit=100)) == 20


async def test_a_full_queue_drops_counts_and_logs(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(store, LedgerSettings(batch_rows=2, max_pending_rows=5))
    with caplog.at_level(logging.WARNING, logger="gateway.tenants.ledger"):
        accepted = [ledger.record(row(i)) for i in range(8)]
        await ledger.close()
    assert accepted == [True] * 5 + [False] * 3
    assert ledger.dropped == 3 and ledger.written == 5
    assert "dropped 3 usage rows" in caplog.text
    assert not ledger.record(row(9))  # closed: refused and counted, not lost silently
    assert ledger.dropped == 4


async def test_a_failed_write_keeps_the_rows_for_the_next_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(store)
    ledger.record(row(1))
    real_write = ledger._write
    calls = []

    async def failing_once(batch: list[ledger_module._Queued]) -> None:  # rows, made at queue time
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("disk full")
        await real_write(batch)

    monkeypatch.setattr(ledger, "_write", failing_once)
    with caplog.at_level(logging.ERROR):
        assert await ledger.flush() == 0
    assert "will retry" in caplog.text and ledger.pending == 1
    await ledger.close()
    assert [r.request_id for r in await recent(store)] == ["req_1"]
    assert ledger.dropped == 0


async def test_a_row_is_written_as_it_was_when_queued(store: Store) -> None:
    ledger = Ledger(store)
    record = row(1, cost=0.5, failed=("p1/small",))
    ledger.record(record)
    record.cost, record.failed = 9.0, ()  # the row was made when queued: this reaches nothing
    await ledger.close()
    assert [r.cost for r in await recent(store)] == [0.5]
    assert await store.fetch("SELECT deployment FROM failed_attempts", ()) == [("p1/small",)]


async def test_roll_ups_total_per_tenant_and_model(store: Store) -> None:
    ledger = Ledger(store)
    ledger.record(row(1, cost=0.5))
    ledger.record(row(2, cost=0.25, model="big", tokens_in=100))
    ledger.record(row(3, cost=0.0, saved_cost=0.5, cache="hit"))
    ledger.record(row(4, tenant="beta", key_id="key_9", cost=1.0, status=502))
    ledger.record(row(5, ts=NOW - 40 * 86_400, cost=9.0))  # an earlier month
    await ledger.close()
    totals = {t.tenant: t for t in await ledger_module.tenant_totals(store, now=NOW)}
    assert set(totals) == {"acme", "beta"}
    acme = totals["acme"]
    assert acme.today.requests == acme.month.requests == 3
    assert acme.today.cost == pytest.approx(0.75)
    assert acme.today.cache_hits == 1 and acme.today.saved_cost == pytest.approx(0.5)
    assert acme.today.tokens_in == 120
    assert totals["beta"].today.errors == 1
    by_model = await spend_by_model(store, tenant="acme", now=NOW)
    assert [(m.model, m.requests) for m in by_model] == [("small", 2), ("big", 1)]
    everyone = await spend_by_model(store, now=NOW)
    assert everyone[0].model == "small" and everyone[0].cost == pytest.approx(1.5)


async def test_queries_filter_by_tenant_and_never_mix_tenants(store: Store) -> None:
    ledger = Ledger(store)
    for i in range(6):
        ledger.record(row(i, tenant="acme" if i % 2 else "beta", status=200 if i < 4 else 429))
    await ledger.close()
    acme = await recent(store, tenant="acme")
    assert {r.tenant for r in acme} == {"acme"} and len(acme) == 3
    assert [r.request_id for r in await recent(store, tenant="beta", status=429)] == ["req_4"]
    assert len(await recent(store, limit=2)) == 2
    assert await recent(store, since=NOW + 1) == []
    only_acme = await ledger_module.tenant_totals(store, tenant="acme", now=NOW)
    assert [t.tenant for t in only_acme] == ["acme"]


async def test_budgets_count_spend_already_in_the_ledger_after_a_restart(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        ledger = Ledger(store)
        today = datetime.now(UTC).timestamp()  # not NOW: a run may cross midnight
        ledger.record(row(1, cost=0.6, ts=today))
        ledger.record(row(2, cost=0.5, ts=today))
        await ledger.close()
    async with open_store(tmp_path) as store:
        assert sum(d.cost for d in await month_spend(store)) == pytest.approx(1.1)
        admission = await load_admission(store, tenant_settings())
    who = principal("acme", "key_1", tenant_limits=Limits(daily_budget_usd=1.0))
    with pytest.raises(BudgetExceeded):
        await admission.admit(who, chat())
    await admission.admit(principal("beta", "key_2", tenant_limits=Limits(daily_budget_usd=1.0)),
                          chat())


async def test_a_flood_of_refusals_adds_a_bounded_number_of_rows_and_loses_no_count(
    store: Store,
) -> None:
    ledger = Ledger(store, LedgerSettings(refusal_rows_per_minute=5))
    minute = (NOW // 60) * 60
    for i in range(1000):  # a bad-key flood: two minutes, two kinds
        ledger.refuse(RefusalRecord(ts=minute + (i >= 500) * 60 + 1, request_id=f"r{i}",
                                    api="/v1/chat/completions", method="POST",
                                    status=401 if i % 4 < 2 else 404, code=f"c{i % 4 < 2}"))
    for i in range(3):  # a tenant's own refusals have a budget of their own
        ledger.refuse(RefusalRecord(ts=minute + 61, request_id=f"t{i}", api="/v1/embeddings",
                                    method="POST", status=429, code="rate_limit_exceeded",
                                    tenant="acme", key_id="key_1"))
    await ledger.flush()
    rows = list(await store.db.execute_fetchall(
        "SELECT tenant, request_id, count FROM refusals"))
    kept = [r for r in rows if r[0] is None and r[1]]
    folded = [r for r in rows if r[0] is None and not r[1]]
    assert len(kept) == 10 and len(folded) == 4  # 5 a minute, then one per minute and kind
    assert sum(r[2] for r in rows if r[0] is None) == 1000
    assert sorted(r[1] for r in rows if r[0] == "acme") == ["t0", "t1", "t2"]
    hourly = await store.db.execute_fetchall(
        "SELECT tenant, sum(count) FROM refusals_hourly GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in hourly] == [("", 1000), ("acme", 3)]
