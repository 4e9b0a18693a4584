"""Read-only ledger queries for the dashboard and for ``/metrics``' budget gauges: a window's
summary and latency percentiles, chart buckets, counts by route, model or deployment, failed
attempts, recent rows with filters, each tenant's use against its limits (beside
``gateway.tenants.ledger``'s own ``recent``, ``tenant_totals`` and ``spend_by_model``).

Every window is cut in three: the whole UTC hours inside it are read from the hourly roll-ups
(``gateway.tenants.rollups``), the two partial hours at its ends from the raw rows (indexed by
time), so a week costs about as much as an hour. Percentiles over whole hours come from the
latency histograms (within half a bucket, ~2.5 %, of the exact value; the page marks them
"≈"); a window with no whole hour (the last hour) is read from raw rows and is exact:
nearest-rank, the smallest value whose cumulative share (``cume_dist()``) reaches the quantile,
over successful requests of the generation APIs (not embeddings), sampled (every n-th row id)
above ``MAX_SAMPLE_ROWS`` rows. The SQL is the part SQLite and PostgreSQL share (counts as
``sum(CASE ...)``, ``?`` or ``:name`` placeholders, a floor that both engines' casts agree on,
``latency_bucket`` defined in each), run through ``TenantStore.fetch``, so the pages draw the
same figures on either store. Reads the ledger only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.tenants.backend import TenantStore
from gateway.tenants.ledger import (
    TOTAL_FIELDS,
    USAGE_COLUMNS,
    TenantTotals,
    Totals,
    UsageRecord,
    tenant_totals,
    usage_record,
)
from gateway.tenants.rollups import (
    EMBEDDINGS_API,
    HOUR_S,
    LATENCY_METRICS,
    histogram_quantile,
    whole_hours,
    window_params,
    window_rows,
)
from gateway.tenants.store import Tenant

QUANTILES = (0.5, 0.95, 0.99)
MAX_SAMPLE_ROWS = 20_000
GroupColumn = Literal["route", "cache", "model", "answered_model", "deployment", "tier",
                      "status", "tenant", "api"]
_GROUP_COLUMNS = frozenset({"route", "cache", "model", "answered_model", "deployment", "tier",
                            "status", "tenant", "api"})
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
    approximate: bool = False
    """From the hourly latency histograms, or every n-th row of a window too large to sort
    whole (``MAX_SAMPLE_ROWS``): shown with "≈"."""


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
class ModelCount:
    """The model a client asked for (``auto``...) and the one that answered it."""

    model: str
    answered: str
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
    api: str | None = None
    """``chat``, ``messages``, ``responses`` or ``embeddings``: the API the client spoke."""
    status: str | None = None
    """"ok" (below 400), "error" (400 and up), or one status code."""
    since: float | None = None
    limit: int = 100


def flag(condition: str) -> str:
    """1 where ``condition`` holds, else 0: SQLite sums booleans, PostgreSQL does not."""
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _floor(x: str) -> str:
    """floor(x) in both engines: SQLite's cast truncates, PostgreSQL's rounds; either way a cast
    above ``x`` is one too many."""
    return f"CAST({x} AS INTEGER) - CASE WHEN CAST({x} AS INTEGER) > {x} THEN 1 ELSE 0 END"


_GENERATION = f"status < 400 AND api <> '{EMBEDDINGS_API}'"  # as latency_hourly counts them
_SUMMARY_SUMS = ("requests", "errors", "cache_hits", "cache_misses", "cache_bypasses",
                 "escalated", "tokens_in", "tokens_out", "cost", "saved_cost")
_SUMMARY_RAW = ("1", flag("status >= 400"), flag("cache = 'hit'"), flag("cache = 'miss'"),
                flag("cache = 'bypass'"), flag("escalations > 0"), "tokens_in", "tokens_out",
                "cost", "saved_cost")


async def summary(store: TenantStore, since: float, until: float) -> Summary:
    """Counts and sums of the requests in ``[since, until)``."""
    rows = window_rows(", ".join(_SUMMARY_SUMS), ", ".join(
        f"{e} AS {n}" for e, n in zip(_SUMMARY_RAW, _SUMMARY_SUMS, strict=True)))
    sums = ", ".join(f"coalesce(sum({n}), 0)" for n in _SUMMARY_SUMS)
    found = await store.fetch(f"SELECT {sums} FROM ({rows}) AS w", window_params(since, until))
    return Summary(*found[0])


async def sample_step(store: TenantStore, since: float, until: float) -> int:
    """Every how many rows to read so that a window's percentiles sort ``MAX_SAMPLE_ROWS``."""
    rows = await store.fetch("SELECT count(*) FROM usage WHERE ts >= ? AND ts < ?",
                             (since, until))
    return max(1, math.ceil(int(rows[0][0]) / MAX_SAMPLE_ROWS))


async def percentiles(
    store: TenantStore, since: float, until: float, column: str = "latency_ms"
) -> Percentiles:
    """p50, p95 and p99 of ``latency_ms`` or ``ttft_ms`` over successful generation requests."""
    if whole_hours(since, until)[0] < until:
        histogram = await _histograms(store, since, until, column, "0")
        return _from_histogram(histogram.get(0, []))
    step = await sample_step(store, since, until)
    grouped = await _grouped_percentiles(store, "0", since, until, column, step)
    return grouped.get(0, Percentiles(approximate=step > 1))


def _from_histogram(counts: list[tuple[int, int]]) -> Percentiles:
    p50, p95, p99 = (histogram_quantile(counts, q) for q in QUANTILES)
    return Percentiles(p50, p95, p99, approximate=True)


async def _histograms(
    store: TenantStore, since: float, until: float, column: str, group: str, **params: Any
) -> dict[int, list[tuple[int, int]]]:
    """Latency histograms over ``[since, until)``: (bucket, count) pairs per value of ``group``
    (an expression of ``{t}``: the hour, or the row's time)."""
    metric = next((m for m, c in LATENCY_METRICS.items() if c == column), None)
    if metric is None:
        raise ValueError(f"no percentiles of {column!r}")
    rows = window_rows(
        f"{group.format(t='hour')} AS g, bucket, count",
        f"{group.format(t='ts')} AS g, latency_bucket({column}) AS bucket, 1 AS count",
        "latency_hourly", raw_where=f"{_GENERATION} AND {column} IS NOT NULL AND ",
        hourly_where=f"metric = '{metric}' AND ")
    found = await store.fetch(
        f"SELECT g, bucket, sum(count) FROM ({rows}) AS w GROUP BY g, bucket",
        window_params(since, until, **params))
    out: dict[int, list[tuple[int, int]]] = {}
    for g, bucket, count in found:
        out.setdefault(int(g), []).append((int(bucket), int(count)))
    return out


async def percentiles_by(
    store: TenantStore, column: GroupColumn, since: float, until: float
) -> dict[str, Percentiles]:
    """Latency percentiles per value of ``column`` (``none`` if missing), from raw rows."""
    step = await sample_step(store, since, until)
    grouped = await _grouped_percentiles(store, _group_expr(column), since, until, "latency_ms",
                                         step)
    return {str(k): v for k, v in grouped.items()}


async def _grouped_percentiles(
    store: TenantStore, group: str, since: float, until: float, column: str, step: int
) -> dict[Any, Percentiles]:
    if column not in _VALUE_COLUMNS:
        raise ValueError(f"no percentiles of {column!r}")
    sql = f"""
    SELECT g, min(CASE WHEN cd >= ? THEN v END), min(CASE WHEN cd >= ? THEN v END),
           min(CASE WHEN cd >= ? THEN v END)
    FROM (SELECT {group} AS g, {column} AS v,
                 cume_dist() OVER (PARTITION BY {group} ORDER BY {column}) AS cd
          FROM usage WHERE ts >= ? AND ts < ? AND {_GENERATION}
                           AND {column} IS NOT NULL AND id % ? = 0) AS ranked
    GROUP BY g"""
    rows = await store.fetch(sql, (*QUANTILES, since, until, step))
    return {r[0]: Percentiles(r[1], r[2], r[3], approximate=step > 1) for r in rows}


_BUCKET_SUMS = ("requests", "errors", "cost", "cache_hits", "cache_misses", "cache_bypasses")
_BUCKET_RAW = {"requests": "1", "errors": flag("status >= 400"), "cost": "cost",
               "cache_hits": flag("cache = 'hit'"), "cache_misses": flag("cache = 'miss'"),
               "cache_bypasses": flag("cache = 'bypass'")}
BUCKET_OF = _floor("(({t} - :since) / :width)")  # of a row's time, or an hour's start


async def buckets(store: TenantStore, since: float, until: float, width_s: int) -> list[Bucket]:
    """Every ``width_s`` bucket from ``since`` to ``until``, empty ones included: from the
    roll-ups when they are whole hours starting on an hour, else from the raw rows."""
    by_hour = width_s % HOUR_S == 0 and since % HOUR_S == 0
    params = window_params(since, until, width=float(width_s))
    if not by_hour:
        params.update(h0=float(until), h1=float(until))  # every row raw
    rows_sql = window_rows(
        f"{BUCKET_OF.format(t='hour')} AS g, {', '.join(_BUCKET_SUMS)}",
        f"{BUCKET_OF.format(t='ts')} AS g, " + ", ".join(f"{_BUCKET_RAW[c]} AS {c}"
                                                           for c in _BUCKET_SUMS))
    sums = ", ".join(f"sum({c})" for c in _BUCKET_SUMS)
    rows = await store.fetch(f"SELECT g, {sums} FROM ({rows_sql}) AS w GROUP BY g", params)
    counts = {int(r[0]): r[1:] for r in rows}
    histograms = (await _histograms(store, since, until, "latency_ms", BUCKET_OF,
                                    width=float(width_s)) if by_hour else None)
    raw_percentiles = None if by_hour else await _bucket_percentiles(
        store, {"since": float(since), "until": float(until), "width": float(width_s)})
    out = []
    for i in range(max(0, int((until - since + width_s - 1) // width_s))):
        c = counts.get(i) or (0, 0, 0.0, 0, 0, 0)
        if histograms is not None:
            p = _from_histogram(histograms.get(i, []))
        else:
            p = (raw_percentiles or {}).get(i, Percentiles())
        out.append(Bucket(since + i * width_s, c[0], c[1] or 0, c[2] or 0.0, c[3] or 0,
                          c[4] or 0, c[5] or 0, p.p50, p.p95))
    return out


async def _bucket_percentiles(
    store: TenantStore, params: Mapping[str, float]
) -> dict[int, Percentiles]:
    group = BUCKET_OF.format(t="ts")
    sql = f"""SELECT g, min(CASE WHEN cd >= 0.5 THEN v END), min(CASE WHEN cd >= 0.95 THEN v END)
    FROM (SELECT {group} AS g, latency_ms AS v,
                 cume_dist() OVER (PARTITION BY {group} ORDER BY latency_ms) AS cd
          FROM usage WHERE ts >= :since AND ts < :until AND {_GENERATION}) AS ranked
    GROUP BY g"""
    rows = await store.fetch(sql, params)
    return {int(r[0]): Percentiles(r[1], r[2]) for r in rows}


_HOURLY_GROUPS = frozenset({"route", "model", "answered_model", "deployment", "api"})


async def counts_by(
    store: TenantStore, column: GroupColumn, since: float, until: float
) -> list[Count]:
    """Requests, errors, cost and savings per value of ``column``, most requests first."""
    return [Count(label[0], n, errors, cost, saved)
            for label, n, errors, cost, saved in await _counts(store, (column,), since, until)]


async def model_counts(store: TenantStore, since: float, until: float) -> list[ModelCount]:
    """Per model asked for and model that answered: requests, errors, cost and savings."""
    rows = await _counts(store, ("model", "answered_model"), since, until)
    return [ModelCount(label[0], label[1], n, errors, cost, saved)
            for label, n, errors, cost, saved in rows]


async def _counts(
    store: TenantStore, columns: tuple[GroupColumn, ...], since: float, until: float
) -> list[tuple[tuple[str, ...], int, int, float, float]]:
    hourly = ", ".join(f"coalesce(nullif({c}, ''), '{NULL_LABEL}') AS g{i}"
                       for i, c in enumerate(columns))
    raw = (", ".join(f"{_group_expr(c)} AS g{i}" for i, c in enumerate(columns))
           + f", 1 AS requests, {flag('status >= 400')} AS errors, cost, saved_cost")
    params = window_params(since, until)
    if all(c in _HOURLY_GROUPS for c in columns):
        rows_sql = window_rows(f"{hourly}, requests, errors, cost, saved_cost", raw)
    else:  # a column the roll-ups do not keep: every row raw
        rows_sql = f"SELECT {raw} FROM usage WHERE ts >= :since AND ts < :until"
    keys = ", ".join(f"g{i}" for i in range(len(columns)))
    rows = await store.fetch(
        f"SELECT {keys}, sum(requests), sum(errors), sum(cost), sum(saved_cost) "
        f"FROM ({rows_sql}) AS w GROUP BY {keys} ORDER BY {len(columns) + 1} DESC, {keys}",
        params)
    width = len(columns)
    return [(tuple(str(v) for v in r[:width]), r[width], r[width + 1], r[width + 2],
             r[width + 3]) for r in rows]


async def failed_attempts(store: TenantStore, since: float, until: float) -> dict[str, int]:
    """Upstream attempts that failed in ``[since, until)``, per deployment (answered elsewhere
    or not)."""
    rows = await store.fetch(
        "SELECT deployment, count(*) FROM failed_attempts WHERE ts >= ? AND ts < ? GROUP BY 1",
        (since, until))
    return {str(r[0]): int(r[1]) for r in rows}


def _group_expr(column: str) -> str:
    if column not in _GROUP_COLUMNS:
        raise ValueError(f"cannot group by {column!r}")
    return f"coalesce(CAST({column} AS TEXT), '{NULL_LABEL}')"  # status is an integer


async def overall_totals(store: TenantStore, now: float) -> TenantTotals:
    """Today's and this month's totals over every tenant (UTC days, from the roll-ups)."""
    per_tenant = await tenant_totals(store, now=now)
    return TenantTotals("*", _sum(t.today for t in per_tenant), _sum(t.month for t in per_tenant))


def _sum(items: Iterable[Totals]) -> Totals:
    total = Totals()
    for item in items:
        total = Totals(*(getattr(total, name) + getattr(item, name) for name in TOTAL_FIELDS))
    return total


async def tenant_usage(store: TenantStore, now: float) -> list[TenantUsage]:
    """Each tenant with today's and this month's totals and its last minute's traffic."""
    tenants = await store.list_tenants()
    totals = {t.tenant: t for t in await tenant_totals(store, now=now)}
    minute = {
        r[0]: (r[1], r[2]) for r in await store.fetch(
            # Grouped by an expression: by the bare column, SQLite walks the whole (tenant, ts)
            # index for the GROUP BY instead of reading the last minute by time.
            "SELECT tenant || '', count(*), sum(tokens_in + tokens_out) FROM usage "
            "WHERE ts >= ? GROUP BY 1", (now - 60.0,))
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


async def budget_usage(store: TenantStore, now: float | None = None) -> list[BudgetUse]:
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


async def find_requests(store: TenantStore, f: RequestFilter) -> list[UsageRecord]:
    """The newest rows matching every given filter, newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("tenant", "route", "model", "cache", "api"):
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
    rows = await store.fetch(
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


async def models_since(store: TenantStore, since_day: str) -> list[str]:
    """The models that served requests since ``since_day`` (from the daily roll-ups)."""
    rows = await store.fetch(
        "SELECT DISTINCT model FROM usage_daily WHERE day >= ? ORDER BY 1", (since_day,))
    return [str(r[0]) for r in rows]


async def distinct_values(
    store: TenantStore, column: GroupColumn, since: float, limit: int = 200
) -> list[str]:
    """The values ``column`` took since ``since`` (from the start of its hour, when the hourly
    roll-ups keep the column), for filter menus."""
    if column in _HOURLY_GROUPS:
        sql = (f"SELECT DISTINCT coalesce(nullif({column}, ''), '{NULL_LABEL}') FROM usage_hourly "
               "WHERE hour >= ? ORDER BY 1 LIMIT ?")
        since = float(since - since % HOUR_S)
    else:
        sql = f"SELECT DISTINCT {_group_expr(column)} FROM usage WHERE ts >= ? ORDER BY 1 LIMIT ?"
    rows = await store.fetch(sql, (since, limit))
    return [str(r[0]) for r in rows]
