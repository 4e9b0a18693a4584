"""The usage ledger: one row per request, written in batches off the request path.

``Ledger.record`` only appends to a bounded in-memory queue; a background task (``start``) writes
the queue every ``flush_interval_s``, or sooner once ``batch_rows`` are waiting, in one transaction
that also folds the rows into the daily roll-ups (``usage_daily``: per day, tenant, key and model,
days in UTC). When the queue is full, new rows are dropped, counted and logged, never silently;
``close`` writes what is left. The query functions below serve the dashboard and the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from gateway.core.sqlite import MAX_INT
from gateway.core.tenant_settings import LedgerSettings
from gateway.tenants.store import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRecord:
    """One request, as accounted: what it used, what it cost, how it went.

    Not frozen, though nothing changes a record once made: a frozen dataclass sets each of these
    19 fields through ``object.__setattr__``, about 2 us per request on the request path.
    """

    request_id: str
    tenant: str
    key_id: str
    model: str
    status: int
    ts: float
    route: str | None = None
    tier: str | None = None
    deployment: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    estimated: bool = False
    cache: str | None = None
    """"hit", "miss", "bypass" or None; a hit costs nothing and records ``saved_cost``."""
    saved_cost: float = 0.0
    escalations: int = 0
    attempts: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None


USAGE_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_INSERT = (
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
)
_ROLL_UP = """
INSERT INTO usage_daily (day, tenant, key_id, model, requests, errors, cache_hits,
                         tokens_in, tokens_out, cost, saved_cost, latency_ms_sum)
SELECT date(ts, 'unixepoch'), tenant, key_id, model, count(*), sum(status >= 400),
       coalesce(sum(cache = 'hit'), 0), sum(tokens_in), sum(tokens_out), sum(cost), sum(saved_cost),
       sum(latency_ms)
FROM usage WHERE id > ? GROUP BY 1, 2, 3, 4
ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET
    requests = requests + excluded.requests, errors = errors + excluded.errors,
    cache_hits = cache_hits + excluded.cache_hits, tokens_in = tokens_in + excluded.tokens_in,
    tokens_out = tokens_out + excluded.tokens_out, cost = cost + excluded.cost,
    saved_cost = saved_cost + excluded.saved_cost,
    latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum
"""


def _row(record: UsageRecord) -> tuple[Any, ...]:
    r = record  # token counts capped: one too big for SQLite would fail every batch, forever
    return (r.request_id, r.tenant, r.key_id, r.model, r.status, r.ts, r.route, r.tier,
            r.deployment, min(r.tokens_in, MAX_INT), min(r.tokens_out, MAX_INT), r.cost,
            int(r.estimated), r.cache, r.saved_cost, r.escalations, r.attempts, r.latency_ms,
            r.ttft_ms)


class Ledger:
    """A bounded queue of ``UsageRecord``s and the task that writes it to the store."""

    def __init__(self, store: Store, settings: LedgerSettings | None = None) -> None:
        self._store = store
        self._settings = settings or LedgerSettings()
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._drop_reported = 0
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord) -> bool:
        """Queue one row (never blocks); False when the queue is full and the row was dropped."""
        if len(self._pending) >= self._settings.max_pending_rows or self._closing:
            self.dropped += 1
            if self.dropped == self._drop_reported + 1:
                log.warning("ledger queue full (%d rows) or closed: dropping usage rows",
                            len(self._pending))
            return False
        self._pending.append(record)
        if len(self._pending) >= self._settings.batch_rows:
            self._wake.set()
        return True

    def start(self) -> None:
        """Start the background writer; ``close`` stops it."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-flush")

    async def close(self) -> None:
        """Stop taking rows, write every queued row, and stop the writer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        self._report_drops()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.flush_interval_s)
            self._wake.clear()
            await self.flush()
            self._report_drops()

    async def flush(self) -> int:
        """Write every queued row now; the number written."""
        written = 0
        async with self._flush_lock:
            batch_rows = self._settings.batch_rows
            while self._pending:
                batch = self._pending[:batch_rows]
                del self._pending[:batch_rows]
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("ledger write of %d rows failed; will retry", len(batch))
                    self._requeue(batch)
                    break
                written += len(batch)
                self.written += len(batch)
                async with self._progress:
                    self._progress.notify_all()
        return written

    async def wait_written(self, count: int) -> None:
        """Return once at least ``count`` rows have been written in total."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.written >= count)

    async def _write(self, batch: list[UsageRecord]) -> None:
        rows = [_row(r) for r in batch]
        async with self._store.transaction() as db:
            first = await db.execute_fetchall("SELECT coalesce(max(id), 0) FROM usage")
            await db.executemany(_INSERT, rows)
            await db.execute(_ROLL_UP, (next(iter(first))[0],))

    def _requeue(self, batch: list[UsageRecord]) -> None:
        room = max(0, self._settings.max_pending_rows - len(self._pending))
        kept = batch[:room]
        self._pending[:0] = kept
        if len(kept) < len(batch):
            self.dropped += len(batch) - len(kept)

    def _report_drops(self) -> None:
        if self.dropped > self._drop_reported:
            log.warning("ledger dropped %d usage rows (%d in total) because its queue was full",
                        self.dropped - self._drop_reported, self.dropped)
            self._drop_reported = self.dropped


# Queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    saved_cost: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantTotals:
    tenant: str
    today: Totals
    month: Totals


@dataclass(frozen=True, slots=True)
class ModelSpend:
    model: str
    requests: int
    tokens_in: int
    tokens_out: int
    cost: float
    saved_cost: float


@dataclass(frozen=True, slots=True)
class DaySpend:
    tenant: str
    key_id: str
    day: str
    cost: float


TOTAL_FIELDS = tuple(f.name for f in fields(Totals))


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def month_start_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-01")


async def recent(
    store: Store,
    *,
    tenant: str | None = None,
    model: str | None = None,
    status: int | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[UsageRecord]:
    """The newest rows first, filtered by any of tenant, model, status and start time."""
    filters = {"tenant = ?": tenant, "model = ?": model, "status = ?": status, "ts >= ?": since}
    chosen = {clause: value for clause, value in filters.items() if value is not None}
    where = f"WHERE {' AND '.join(chosen)} " if chosen else ""
    rows = await store.db.execute_fetchall(
        f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage {where}ORDER BY id DESC LIMIT ?",
        (*chosen.values(), max(0, limit)),
    )
    return [usage_record(row) for row in rows]


def usage_record(row: Any) -> UsageRecord:
    """A ``UsageRecord`` from a row of ``USAGE_COLUMNS``."""
    values = dict(zip(USAGE_COLUMNS, row, strict=True))
    values["estimated"] = bool(values["estimated"])
    return UsageRecord(**values)


async def tenant_totals(
    store: Store, *, tenant: str | None = None, now: float | None = None
) -> list[TenantTotals]:
    """Per tenant, today's and this month's totals (UTC), from the roll-ups."""
    now = time.time() if now is None else now
    today = ", ".join(f"sum(CASE WHEN day = :day THEN {f} ELSE 0 END)" for f in TOTAL_FIELDS)
    month = ", ".join(f"sum({f})" for f in TOTAL_FIELDS)
    where = "day >= :month" + (" AND tenant = :tenant" if tenant is not None else "")
    rows = await store.db.execute_fetchall(
        f"SELECT tenant, {today}, {month} FROM usage_daily WHERE {where} "
        "GROUP BY tenant ORDER BY tenant",
        {"day": day_of(now), "month": month_start_of(now), "tenant": tenant},
    )
    width = len(TOTAL_FIELDS)
    return [
        TenantTotals(r[0], Totals(*r[1 : 1 + width]), Totals(*r[1 + width : 1 + 2 * width]))
        for r in rows
    ]


async def spend_by_model(
    store: Store, *, tenant: str | None = None, since_day: str | None = None,
    now: float | None = None,
) -> list[ModelSpend]:
    """Spend per model since ``since_day`` (default: the first of this month), largest first."""
    since = since_day or month_start_of(time.time() if now is None else now)
    where = "day >= ?" + (" AND tenant = ?" if tenant is not None else "")
    params = (since, tenant) if tenant is not None else (since,)
    rows = await store.db.execute_fetchall(
        "SELECT model, sum(requests), sum(tokens_in), sum(tokens_out), sum(cost), "
        f"sum(saved_cost) FROM usage_daily WHERE {where} GROUP BY model "
        "ORDER BY sum(cost) DESC, model",
        params,
    )
    return [ModelSpend(*r) for r in rows]


async def month_spend(store: Store, *, now: float | None = None) -> list[DaySpend]:
    """This month's spend per tenant, key and day: what budgets start from after a restart."""
    since = month_start_of(time.time() if now is None else now)
    rows = await store.db.execute_fetchall(
        "SELECT tenant, key_id, day, sum(cost) FROM usage_daily WHERE day >= ? "
        "GROUP BY tenant, key_id, day",
        (since,),
    )
    return [DaySpend(*r) for r in rows]
