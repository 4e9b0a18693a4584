"""The dashboard's pages: overview, providers, tenants and recent requests.

Each handler reads the ledger (``queries``, ``refusals`` and the tenants ledger's queries) and
in-memory state (``Failover.health``), shapes the figures into small frozen values, and renders
one template. Query parameters select the time window and the
filters; a value that does not parse falls back to the default rather than failing the page.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from aiohttp import web
from markupsafe import Markup

from gateway.core.redact import redact
from gateway.observability.dashboard import queries as q
from gateway.observability.dashboard.charts import meter
from gateway.observability.dashboard.figures import mix, overview_charts, span
from gateway.observability.dashboard.refusals import (
    UNAUTHENTICATED,
    latest_refusals,
    refusal_counts,
    refusals_by_tenant,
)
from gateway.observability.dashboard.state import DASHBOARD_KEY, fresh_store, render, require_login
from gateway.tenants.backend import TenantStore
from gateway.tenants.ledger import day_of, spend_by_model
from gateway.upstream.appkeys import FAILOVER
from gateway.upstream.failover import BreakerState, Health

DEFAULT_WINDOW = "1h"
MAX_ROWS = 500
DEFAULT_ROWS = 100
RECENT_ERRORS = 5
REFUSAL_ROWS = 100
_STATUS = re.compile(r"[1-5][0-9][0-9]")  # one HTTP status code


def _window(request: web.Request) -> q.Window:
    return q.WINDOWS.get(request.query.get("window", ""), q.WINDOWS[DEFAULT_WINDOW])


@require_login
async def overview(request: web.Request) -> web.StreamResponse:
    store = await fresh_store(request)
    now = request.app[DASHBOARD_KEY].clock()
    window = _window(request)
    since = now - window.seconds
    start, end = span(now, window)
    routes = await q.counts_by(store, "route", since, now)
    models = await q.model_counts(store, since, now)
    refused = await refusal_counts(store, since, now)
    return render(request, "overview.html", {
        "page": "overview",
        "window": window,
        "windows": q.WINDOWS.values(),
        "summary": await q.summary(store, since, now),
        "latency": await q.percentiles(store, since, now),
        "ttft": await q.percentiles(store, since, now, "ttft_ms"),
        "totals": await q.overall_totals(store, now),
        "charts": overview_charts(await q.buckets(store, start, end, window.bucket_s), window),
        "routes": mix("Route mix", routes),
        "models": models[:10],
        "refused": refused[:8],
        "refused_total": sum(r.count for r in refused),
    })


@dataclass(frozen=True, slots=True)
class ProviderRow:
    health: Health
    state: str
    """closed, half_open or open, as it stands now."""
    retry_in_s: float | None
    errors: tuple[tuple[float, str], ...]
    hour: q.Count | None
    hour_latency: q.Percentiles
    failed_attempts: int = 0
    """Attempts at this deployment that failed in the last hour, answered elsewhere or not."""

    @property
    def hour_requests(self) -> int:
        """Rows it answered (or failed mid-answer) and attempts that failed before answering."""
        return (self.hour.requests if self.hour else 0) + self.failed_attempts

    @property
    def hour_errors(self) -> int:
        return (self.hour.errors if self.hour else 0) + self.failed_attempts


def _provider_row(h: Health, hour: dict[str, q.Count], hour_latency: dict[str, q.Percentiles],
                  failed: dict[str, int], mono_now: float) -> ProviderRow:
    state, retry_in = h.state, None
    if state is BreakerState.OPEN:
        if mono_now >= h.open_until:
            state = BreakerState.HALF_OPEN
        else:
            retry_in = h.open_until - mono_now
    errors = tuple((ts, redact(message)) for ts, message in reversed(h.recent_errors))
    d = h.deployment.id
    return ProviderRow(h, state.value, retry_in, errors, hour.get(d),
                       hour_latency.get(d, q.Percentiles()), failed.get(d, 0))


@require_login
async def providers(request: web.Request) -> web.StreamResponse:
    store = await fresh_store(request)
    now = request.app[DASHBOARD_KEY].clock()
    since = now - 3600
    hour = {c.label: c for c in await q.counts_by(store, "deployment", since, now)}
    hour_latency = await q.percentiles_by(store, "deployment", since, now)
    failed = await q.failed_attempts(store, since, now)
    failover = request.app.get(FAILOVER)
    health = failover.health.values() if failover is not None else ()
    mono_now = time.monotonic()
    rows = [_provider_row(h, hour, hour_latency, failed, mono_now) for h in health]
    order = {"open": 0, "half_open": 1, "closed": 2}
    rows.sort(key=lambda r: (order[r.state], r.health.deployment.provider.name,
                             r.health.deployment.id))
    counts = {state: sum(1 for r in rows if r.state == state) for state in order}
    return render(request, "providers.html", {
        "page": "providers", "rows": rows, "counts": counts, "recent_errors": RECENT_ERRORS,
    })


@dataclass(frozen=True, slots=True)
class LimitUse:
    label: str
    used: float
    limit: float | None
    kind: str
    """usd or count: how to print ``used`` and ``limit``."""

    @property
    def share(self) -> float | None:
        if self.limit is None:
            return None
        return self.used / self.limit if self.limit > 0 else 1.0

    @property
    def bar(self) -> Markup:
        return meter(self.share, f"{self.label}: {self.used} of {self.limit}")


def _limit_uses(u: q.TenantUsage) -> tuple[LimitUse, ...]:
    limits = u.tenant.limits
    return (
        LimitUse("Today", u.today.cost, limits.daily_budget_usd, "usd"),
        LimitUse("This month", u.month.cost, limits.monthly_budget_usd, "usd"),
        LimitUse("Requests / min", u.minute_requests, limits.requests_per_minute, "count"),
        LimitUse("Tokens / min", u.minute_tokens, limits.tokens_per_minute, "count"),
    )


@require_login
async def tenants(request: web.Request) -> web.StreamResponse:
    store = await fresh_store(request)
    now = request.app[DASHBOARD_KEY].clock()
    usages = await q.tenant_usage(store, now)
    day_start = now - now % 86_400
    refused = await refusals_by_tenant(store, day_start, now)
    names = {u.tenant.name for u in usages}
    chosen = request.query.get("tenant")
    selected = chosen if chosen in names else None
    return render(request, "tenants.html", {
        "page": "tenants",
        "rows": [(u, _limit_uses(u)) for u in usages],
        "refused": refused,
        "unauthenticated": UNAUTHENTICATED,
        "selected": selected,
        "by_model": await spend_by_model(store, tenant=selected, now=now),
    })


def request_filter(request: web.Request, now: float) -> q.RequestFilter:
    """The requests page's filters from the query string; unknown values are ignored."""
    query = request.query
    limit_text = query.get("limit", "")
    limit = min(int(limit_text), MAX_ROWS) if limit_text.isascii() and limit_text.isdigit() \
        else DEFAULT_ROWS
    window = q.WINDOWS.get(query.get("window", ""))
    status = query.get("status") or None
    return q.RequestFilter(
        tenant=query.get("tenant") or None,
        route=query.get("route") or None,
        model=query.get("model") or None,
        cache=query.get("cache") or None,
        api=query.get("api") or None,
        status=status if status in ("ok", "error") or _STATUS.fullmatch(status or "") else None,
        since=now - window.seconds if window is not None else None,
        limit=limit,
    )


async def _options(store: TenantStore, now: float, chosen: q.RequestFilter) -> dict[str, list[str]]:
    """Menu values: every tenant, the models of the last month, the routes of the last day."""
    options = {
        "tenant": [t.name for t in await store.list_tenants()],
        "model": await q.models_since(store, day_of(now - 31 * 86_400)),
        "route": await q.distinct_values(store, "route", now - 86_400),
    }
    for column, values in options.items():
        current = getattr(chosen, column)
        if current is not None and current not in values:
            values.append(current)  # keep a chosen filter visible even when it has gone quiet
    return options


@require_login
async def requests_page(request: web.Request) -> web.StreamResponse:
    store = await fresh_store(request)
    now = request.app[DASHBOARD_KEY].clock()
    chosen = request_filter(request, now)
    rows = await q.find_requests(store, chosen)
    refusals = await latest_refusals(store, tenant=chosen.tenant, since=chosen.since,
                                     limit=min(chosen.limit, REFUSAL_ROWS))
    return render(request, "requests.html", {
        "page": "requests",
        "rows": rows,
        "refusals": refusals,
        "filter": chosen,
        "query": request.query,
        "options": await _options(store, now, chosen),
        "windows": q.WINDOWS.values(),
        "limits": (50, 100, 200, MAX_ROWS),
    })
