"""Read-only ledger queries for the dashboard and for ``/metrics``' budget gauges.

They complement ``gateway.tenants.ledger``'s own queries (``recent``, ``tenant_totals``,
``spend_by_model``) with what the pages draw: a window's summary and latency percentiles, time
buckets for the charts, counts by route, cache result or deployment, recent rows with more
filters, and each tenant's use against its limits. Raw rows (``usage``, indexed by time) serve
windows up to a week; the daily roll-ups (``usage_daily``) serve "today" and "this month".

Percentiles are nearest-rank: the smallest value whose cumulative share (SQLite's
``cume_dist()``) reaches the quantile, over successful requests (status below 400). A window
holding more than ``MAX_SAMPLE_ROWS`` rows is sampled (every n-th row id) so that the sort stays
small; the result says so. Touches the tenants database through ``Store.db``, reading only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.tenants.ledger import (
    TOTAL_FIELDS,
    USAGE_COLUMNS,
    TenantTotals,
    Totals,
    UsageRecord,
    tenant_totals,
    usage_record,
)
from gateway.tenants.store import Store, Tenant

QUANTILES = (0.5, 0.95, 0.99)
MAX_SAMPLE_ROWS = 20_000
GroupColumn = Literal["route", "cache", "model", "deployment", "tier", "status", "tenant"]
_GROUP_COLUMNS = frozenset({"route", "cache", "model", "deployment", "tier", "status", "tenant"})
_VALUE_COLUMNS = frozenset({"latency_ms", "ttft_ms"})
NULL_LABEL = "none"
"""How a missing route or cache result is named in filters and groupings."""


@dataclass(frozen=True, slots=True)
class Window:
    key: str
    seconds: int
    bucket_s: int
    label: str


WINDOWS: Mapping[str, Window] = {
    w.key: w for w in (
        Window("1h", 3_600, 120, "last hour"),
        Window("24h", 86_400, 3_600, "last 24 hours"),
        Window("7d", 7 * 86_400, 6 * 3_600, "last 7 days"),
    )
}


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bypasses: int = 0
    escalated: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    saved_cost: float = 0.0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def hit_rate(self) -> float | None:
        """Hits among lookups (hits and misses); bypassed requests did not look."""
        looked = self.cache_hits + self.cache_misses
        return self.cache_hits / looked if looked else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    sampled: bool = False
    """Computed from every n-th row of a window too large to sort whole (``MAX_SAMPLE_ROWS``)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    requests: int = 0
    errors: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bypasses: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Count:
    label: str
    requests: int
    errors: int
    cost: float
    saved_cost: float


@dataclass(frozen=True, slots=True)
class TenantUsage:
    tenant: Tenant
    today: Totals
    month: Totals
    minute_requests: int
    minute_tokens: int
    active_keys: int


@dataclass(frozen=True, slots=True)
class BudgetUse:
    tenant: str
    period: str
    spent: float
    budget: float

    @property
    def share(self) -> float:
        return self.spent / self.budget if self.budget > 0 else 1.0


@dataclass(frozen=True, slots=True)
class RequestFilter:
    tenant: str | None = None
    route: str | None = None
    model: str | None = None
    cache: str | None = None
    status: str | None = None
    """"ok" (below 400), "error" (400 and up), or one status code."""
    since: float | None = None
    limit: int = 100


_SUMMARY = """
SELECT count(*), coalesce(sum(status >= 400), 0), coalesce(sum(cache = 'hit'), 0),
       coalesce(sum(cache = 'miss'), 0), coalesce(sum(cache = 'bypass'), 0),
       coalesce(sum(escalations > 0), 0), coalesce(sum(tokens_in), 0),
       coalesce(sum(tokens_out), 0), coalesce(sum(cost), 0.0), coalesce(sum(saved_cost), 0.0)
FROM usage WHERE ts >= :since AND ts < :until
"""


async def summary(store: Store, since: float, until: float) -> Summary:
    """Counts and sums of the requests in ``[since, until)``."""
    rows = list(await store.db.execute_fetchall(_SUMMARY, {"since": since, "until": until}))
    return Summary(*rows[0])


async def sample_step(store: Store, since: float, until: float) -> int:
    """Every how many rows to read so that a window's percentiles sort ``MAX_SAMPLE_ROWS``."""
    rows = list(await store.db.execute_fetchall(
        "SELECT count(*) FROM usage WHERE ts >= ? AND ts < ?", (since, until)))
    return max(1, math.ceil(int(rows[0][0]) / MAX_SAMPLE_ROWS))


async def percentiles(
    store: Store, since: float, until: float, column: str = "latency_ms"
) -> Percentiles:
    """p50, p95 and p99 of ``latency_ms`` or ``ttft_ms`` over successful requests."""
    step = await sample_step(store, since, until)
    grouped = await _grouped_percentiles(store, "0", since, until, column, step)
    return grouped.get(0, Percentiles(sampled=step > 1))


async def percentiles_by(
    store: Store, column: GroupColumn, since: float, until: float
) -> dict[str, Percentiles]:
    """Latency percentiles per value of ``column`` (a missing value is ``none``)."""
    step = await sample_step(store, since, until)
    grouped = await _grouped_percentiles(store, _group_expr(column), since, until, "latency_ms",
                                         step)
    return {str(k): v for k, v in grouped.items()}


async def _grouped_percentiles(
    store: Store, group: str, since: float, until: float, column: str, step: int
) -> dict[Any, Percentiles]:
    if column not in _VALUE_COLUMNS:
        raise ValueError(f"no percentiles of {column!r}")
    sql = f"""
    SELECT g, min(CASE WHEN cd >= :q0 THEN v END), min(CASE WHEN cd >= :q1 THEN v END),
           min(CASE WHEN cd >= :q2 THEN v END)
    FROM (SELECT {group} AS g, {column} AS v,
                 cume_dist() OVER (PARTITION BY {group} ORDER BY {column}) AS cd
          FROM usage WHERE ts >= :since AND ts < :until AND status < 400
                           AND {column} IS NOT NULL AND id % :step = 0)
    GROUP BY g"""
    params = {"since": since, "until": until, "step": step,
              **{f"q{i}": q for i, q in enumerate(QUANTILES)}}
    rows = await store.db.execute_fetchall(sql, params)
    return {r[0]: Percentiles(r[1], r[2], r[3], sampled=step > 1) for r in rows}


async def buckets(store: Store, since: float, until: float, width_s: int) -> list[Bucket]:
    """Every ``width_s`` bucket from ``since`` to ``until``, empty ones included."""
    params = {"since": since, "until": until, "width": width_s,
              "step": await sample_step(store, since, until)}
    group = "CAST((ts - :since) / :width AS INTEGER)"
    rows = await store.db.execute_fetchall(
        f"SELECT {group}, count(*), sum(status >= 400), sum(cost), sum(cache = 'hit'), "
        "sum(cache = 'miss'), sum(cache = 'bypass') FROM usage "
        "WHERE ts >= :since AND ts < :until GROUP BY 1",
        params,
    )
    counts = {r[0]: r[1:] for r in rows}
    sql_percentiles = await _bucket_percentiles(store, group, params)
    out = []
    count = max(0, int((until - since + width_s - 1) // width_s))
    for i in range(count):
        c = counts.get(i)
        p = sql_percentiles.get(i, Percentiles())
        start = since + i * width_s
        if c is None:
            out.append(Bucket(start, p50_ms=p.p50, p95_ms=p.p95))
        else:
            out.append(Bucket(start, c[0], c[1] or 0, c[2] or 0.0, c[3] or 0, c[4] or 0,
                              c[5] or 0, p.p50, p.p95))
    return out


async def _bucket_percentiles(
    store: Store, group: str, params: Mapping[str, float]
) -> dict[int, Percentiles]:
    sql = f"""
    SELECT g, min(CASE WHEN cd >= 0.5 THEN v END), min(CASE WHEN cd >= 0.95 THEN v END)
    FROM (SELECT {group} AS g, latency_ms AS v,
                 cume_dist() OVER (PARTITION BY {group} ORDER BY latency_ms) AS cd
          FROM usage WHERE ts >= :since AND ts < :until AND status < 400 AND id % :step = 0)
    GROUP BY g"""
    rows = await store.db.execute_fetchall(sql, params)
    return {r[0]: Percentiles(r[1], r[2]) for r in rows}


async def counts_by(store: Store, column: GroupColumn, since: float, until: float) -> list[Count]:
    """Requests, errors, cost and savings per value of ``column``, most requests first."""
    expr = _group_expr(column)
    rows = await store.db.execute_fetchall(
        f"SELECT {expr}, count(*), sum(status >= 400), sum(cost), sum(saved_cost) FROM usage "
        "WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY 2 DESC, 1",
        (since, until),
    )
    return [Count(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _group_expr(column: str) -> str:
    if column not in _GROUP_COLUMNS:
        raise ValueError(f"cannot group by {column!r}")
    return f"coalesce({column}, '{NULL_LABEL}')"


async def overall_totals(store: Store, now: float) -> TenantTotals:
    """Today's and this month's totals over every tenant (UTC days, from the roll-ups)."""
    per_tenant = await tenant_totals(store, now=now)
    return TenantTotals("*", _sum(t.today for t in per_tenant), _sum(t.month for t in per_tenant))


def _sum(items: Iterable[Totals]) -> Totals:
    total = Totals()
    for item in items:
        total = Totals(*(getattr(total, name) + getattr(item, name) for name in TOTAL_FIELDS))
    return total


async def tenant_usage(store: Store, now: float) -> list[TenantUsage]:
    """Each tenant with today's and this month's totals and its last minute's traffic."""
    tenants = await store.list_tenants()
    totals = {t.tenant: t for t in await tenant_totals(store, now=now)}
    minute = {
        r[0]: (r[1], r[2]) for r in await store.db.execute_fetchall(
            "SELECT tenant, count(*), sum(tokens_in + tokens_out) FROM usage WHERE ts >= ? "
            "GROUP BY tenant", (now - 60.0,))
    }
    keys: dict[str, int] = {}
    for key in await store.list_keys(active_only=True):
        keys[key.tenant] = keys.get(key.tenant, 0) + 1
    empty = TenantTotals("", Totals(), Totals())
    out = []
    for t in tenants:
        total = totals.get(t.name, empty)
        requests, tokens = minute.get(t.name, (0, 0))
        out.append(TenantUsage(t, total.today, total.month, requests, tokens or 0,
                               keys.get(t.name, 0)))
    return out


async def budget_usage(store: Store, now: float | None = None) -> list[BudgetUse]:
    """Spend against each enabled tenant's daily and monthly budgets, where it has them."""
    now = time.time() if now is None else now
    totals = {t.tenant: t for t in await tenant_totals(store, now=now)}
    uses = []
    for t in await store.list_tenants():
        if t.disabled:
            continue
        total = totals.get(t.name)
        if t.limits.daily_budget_usd is not None:
            spent = total.today.cost if total else 0.0
            uses.append(BudgetUse(t.name, "day", spent, t.limits.daily_budget_usd))
        if t.limits.monthly_budget_usd is not None:
            spent = total.month.cost if total else 0.0
            uses.append(BudgetUse(t.name, "month", spent, t.limits.monthly_budget_usd))
    return uses


async def find_requests(store: Store, f: RequestFilter) -> list[UsageRecord]:
    """The newest rows matching every given filter, newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("tenant", "route", "model", "cache"):
        value = getattr(f, column)
        if value is None:
            continue
        if value == NULL_LABEL and column in ("route", "cache"):
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = ?")
            params.append(value)
    _status_clause(f.status, clauses, params)
    if f.since is not None:
        clauses.append("ts >= ?")
        params.append(f.since)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    rows = await store.db.execute_fetchall(
        f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage {where}ORDER BY id DESC LIMIT ?",
        (*params, max(0, f.limit)),
    )
    return [usage_record(row) for row in rows]


def _status_clause(status: str | None, clauses: list[str], params: list[Any]) -> None:
    if status == "ok":
        clauses.append("status < 400")
    elif status == "error":
        clauses.append("status >= 400")
    elif status is not None and status.isascii() and status.isdigit():
        clauses.append("status = ?")
        params.append(int(status))


async def models_since(store: Store, since_day: str) -> list[str]:
    """The models that served requests since ``since_day`` (from the daily roll-ups)."""
    rows = await store.db.execute_fetchall(
        "SELECT DISTINCT model FROM usage_daily WHERE day >= ? ORDER BY 1", (since_day,))
    return [str(r[0]) for r in rows]


async def distinct_values(
    store: Store, column: GroupColumn, since: float, limit: int = 200
) -> list[str]:
    """The values ``column`` took since ``since``, for filter menus."""
    expr = _group_expr(column)
    rows = await store.db.execute_fetchall(
        f"SELECT DISTINCT {expr} FROM usage WHERE ts >= ? ORDER BY 1 LIMIT ?", (since, limit)
    )
    return [str(r[0]) for r in rows]
