"""The usage ledger: one row per request, written in batches off the request path.

``Ledger.record`` only appends to a bounded in-memory queue; a background task (``start``) writes
the queue every ``flush_interval_s``, or sooner once ``batch_rows`` are waiting, in one transaction
that also folds the rows into the daily roll-ups (``usage_daily``: per day, tenant, key and model,
days in UTC) and the hourly ones (``rollups.py``). The same queue carries refusals (requests the
gateway answered with a 4xx of its own: ``refuse``, capped per tenant and minute) and the
deployments of failed upstream attempts. When the queue is full, new rows are dropped,
counted and logged, never silently; ``close`` writes what is left. The query functions below
serve the dashboard and the admin API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from gateway.core.batch_writer import BatchWriter
from gateway.core.sqlite import MAX_INT
from gateway.core.tenant_settings import LedgerSettings
from gateway.tenants.backend import TenantStore
from gateway.tenants.rollups import CHAT_API
from gateway.tenants.store import REFUSAL_COLUMNS as REFUSAL_COLUMNS
from gateway.tenants.store import USAGE_COLUMNS as USAGE_COLUMNS

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
    api: str = CHAT_API
    """The API the client spoke: ``chat``, ``messages``, ``responses`` or ``embeddings``."""
    answered_model: str | None = None
    """The public name of the deployment that answered (``model`` is what was asked for)."""
    failed: tuple[str, ...] = ()
    """The deployments of the attempts that failed on the way (``failed_attempts``, not a
    column of ``usage``)."""


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    """A request the gateway refused itself with a 4xx before it reached the usage ledger.

    ``count`` above 1: refusals past ``LedgerSettings.refusal_rows_per_minute`` for one tenant (or
    for unauthenticated callers) in one minute, folded into one row without a request id.
    """

    ts: float
    request_id: str
    api: str
    method: str
    status: int
    code: str
    tenant: str | None = None
    key_id: str | None = None
    param: str | None = None
    count: int = 1


def _row(record: UsageRecord) -> tuple[Any, ...]:
    r = record  # token counts capped: one too big for SQLite would fail every batch, forever
    return (r.request_id, r.tenant, r.key_id, r.model, r.status, r.ts, r.route, r.tier,
            r.deployment, min(r.tokens_in, MAX_INT), min(r.tokens_out, MAX_INT), r.cost,
            r.estimated, r.cache, r.saved_cost, r.escalations, r.attempts, r.latency_ms,
            r.ttft_ms, r.api, r.answered_model)


_Queued = tuple[bool, tuple[Any, ...], tuple[tuple[Any, ...], ...]]
"""A queued row as it will be written: usage (True) or refusal, the row, the usage row's
failed attempts. Made when the row is queued, a few microseconds inside its request: made a
batch at a time, they held the event loop ~1 ms at each write (bench/RESULTS.md, issue 20)."""


def _queued(record: UsageRecord | RefusalRecord) -> _Queued:
    if isinstance(record, RefusalRecord):
        return False, _refusal_row(record), ()
    return True, _row(record), tuple((record.ts, record.request_id, d) for d in record.failed)


class Ledger:
    """A bounded queue of usage and refusal rows and the task that writes it to the store."""

    def __init__(self, store: TenantStore, settings: LedgerSettings | None = None) -> None:
        self._store = store
        self._settings = settings or LedgerSettings()
        self._pending: list[_Queued] = []
        self._flush_lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._writer = BatchWriter(self._write_queued, interval_s=self._settings.flush_interval_s,
                                   name="ledger-flush")
        self._drop_reported = 0
        self._refusal_minute = -1
        self._refusal_rows: dict[str | None, int] = {}
        """Detail rows queued this minute, per tenant (None: unauthenticated callers)."""
        self._folded: dict[tuple[int, str | None, str, str, int, str], int] = {}
        """Refusals past the per-minute cap: (minute, tenant, api, method, status, code) → n."""
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord | RefusalRecord) -> bool:
        """Queue one row (never blocks); False when the queue is full and the row was dropped."""
        if len(self._pending) >= self._settings.max_pending_rows or self._writer.closing:
            self.dropped += 1
            if self.dropped == self._drop_reported + 1:
                log.warning("ledger queue full (%d rows) or closed: dropping usage rows",
                            len(self._pending))
            return False
        self._pending.append(_queued(record))
        if len(self._pending) >= self._settings.batch_rows:
            self._writer.wake()
        return True

    def refuse(self, refusal: RefusalRecord) -> None:
        """Queue a refusal: its own row while its tenant (or the unauthenticated callers) has
        had fewer than ``refusal_rows_per_minute`` this minute, else folded into a count, so
        that a flood of bad requests adds a bounded number of rows a minute."""
        minute = int(refusal.ts // 60)
        if minute != self._refusal_minute:
            self._refusal_minute = minute
            self._refusal_rows.clear()
        seen = self._refusal_rows.get(refusal.tenant, 0)
        if seen < self._settings.refusal_rows_per_minute:
            self._refusal_rows[refusal.tenant] = seen + 1
            self.record(refusal)
            return
        r = refusal
        key = (minute, r.tenant, r.api, r.method, r.status, r.code)
        self._folded[key] = self._folded.get(key, 0) + 1

    def start(self) -> None:
        """Start the background writer; ``close`` stops it."""
        self._writer.start()

    async def close(self) -> None:
        """Stop taking rows, write every queued row, and stop the writer."""
        await self._writer.close()
        await self.flush()
        self._report_drops()

    async def _write_queued(self) -> None:
        await self.flush(until_empty=False)  # what came meanwhile waits (core.batch_writer)
        self._report_drops()

    async def flush(self, *, until_empty: bool = True) -> int:
        """Write every queued row now, the number written; with ``until_empty`` false, only
        the rows queued when it starts, not those that arrive while it writes."""
        written = 0
        async with self._flush_lock:
            self._queue_folded()
            batch_rows = self._settings.batch_rows
            left = len(self._pending)
            while self._pending and (until_empty or written < left):
                size = batch_rows if until_empty else min(batch_rows, left - written)
                batch = self._pending[:size]
                del self._pending[:size]
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

    def _queue_folded(self) -> None:
        """The folded refusals of past minutes (and this one's so far) as rows of their own."""
        folded, self._folded = self._folded, {}
        for (minute, tenant, api, method, status, code), count in folded.items():
            self._pending.append(_queued(RefusalRecord(
                ts=minute * 60.0 + 59.0, request_id="", api=api, method=method, status=status,
                code=code, tenant=tenant, count=count,
            )))

    async def wait_written(self, count: int) -> None:
        """Return once at least ``count`` rows have been written in total."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.written >= count)

    async def _write(self, batch: list[_Queued]) -> None:
        usage = [row for is_usage, row, _ in batch if is_usage]
        failed = [attempt for _, _, attempts in batch for attempt in attempts]
        refusals = [row for is_usage, row, _ in batch if not is_usage]
        await self._store.write_usage(usage, failed, refusals)

    def _requeue(self, batch: list[_Queued]) -> None:
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


def _refusal_row(r: RefusalRecord) -> tuple[Any, ...]:
    return (r.ts, r.request_id, r.api, r.method, r.status, r.code, r.tenant, r.key_id, r.param,
            r.count)


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
    store: TenantStore,
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
    rows = await store.fetch(
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
    store: TenantStore, *, tenant: str | None = None, now: float | None = None
) -> list[TenantTotals]:
    """Per tenant, today's and this month's totals (UTC), from the roll-ups."""
    now = time.time() if now is None else now
    today = ", ".join(f"sum(CASE WHEN day = ? THEN {f} ELSE 0 END)" for f in TOTAL_FIELDS)
    month = ", ".join(f"sum({f})" for f in TOTAL_FIELDS)
    where = "day >= ?" + (" AND tenant = ?" if tenant is not None else "")
    params = [day_of(now)] * len(TOTAL_FIELDS) + [month_start_of(now)]
    rows = await store.fetch(
        f"SELECT tenant, {today}, {month} FROM usage_daily WHERE {where} "
        "GROUP BY tenant ORDER BY tenant",
        params if tenant is None else [*params, tenant],
    )
    width = len(TOTAL_FIELDS)
    return [
        TenantTotals(r[0], Totals(*r[1 : 1 + width]), Totals(*r[1 + width : 1 + 2 * width]))
        for r in rows
    ]


async def spend_by_model(
    store: TenantStore, *, tenant: str | None = None, since_day: str | None = None,
    now: float | None = None,
) -> list[ModelSpend]:
    """Spend per model since ``since_day`` (default: the first of this month), largest first."""
    since = since_day or month_start_of(time.time() if now is None else now)
    where = "day >= ?" + (" AND tenant = ?" if tenant is not None else "")
    params = (since, tenant) if tenant is not None else (since,)
    rows = await store.fetch(
        "SELECT model, sum(requests), sum(tokens_in), sum(tokens_out), sum(cost), "
        f"sum(saved_cost) FROM usage_daily WHERE {where} GROUP BY model "
        "ORDER BY sum(cost) DESC, model",
        params,
    )
    return [ModelSpend(*r) for r in rows]


async def month_spend(store: TenantStore, *, now: float | None = None) -> list[DaySpend]:
    """This month's spend per tenant, key and day: what budgets start from after a restart."""
    since = month_start_of(time.time() if now is None else now)
    rows = await store.fetch(
        "SELECT tenant, key_id, day, sum(cost) FROM usage_daily WHERE day >= ? "
        "GROUP BY tenant, key_id, day",
        (since,),
    )
    return [DaySpend(*r) for r in rows]
