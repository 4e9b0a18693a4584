"""Prometheus metrics: a per-app registry, the typed calls the request path makes, ``/metrics``.

``Metrics`` owns a ``CollectorRegistry`` (never the process-global default) and offers one small
method per event: ``request_done``, ``cache_result``, ``escalated``, ``refused``,
``embedder_call`` and so on. Label values are bounded: route, tier and deployment names come
from the configuration, statuses are HTTP codes, kinds and results are fixed sets, and a tenant
label on per-request metrics exists only with ``[observability] tenant_labels = true``
(refusals, rare and counted per tenant for operators, always carry it). As a last guard, a
metric that has seen ``MAX_SERIES`` label sets files any new one under ``other``.

The two calls every request makes, ``request_done`` and ``cache_result``, skip the library's
metric objects (a lock and several calls per ``inc``): they add to plain floats, ``Count`` and
``Buckets``, bound once per label set, and ``FamiliesCollector`` turns those into the same
counters and histograms at scrape time. That is safe because the request path and ``/metrics``
both run on the event loop's thread; anything that may be called from another thread (the
embedder's figures) or rarely (refusals, escalations, gauges) keeps the library's locked
objects. ``bench/bench_metrics.py`` measures what a request costs.

State that already lives elsewhere is read at scrape time by ``StateCollector``: each
deployment's circuit breaker (``Failover.health``) and the ledger's queue. Budget use needs the
database, so the ``/metrics`` handler refreshes it (one small query) before rendering.

Names follow Prometheus conventions: the ``gateway_`` prefix, base units (seconds, USD),
``_total`` counters. ``GET /metrics`` is open on the bind address like most exporters, unless
``[observability] metrics_token_env`` names a variable holding a bearer token.
"""

from __future__ import annotations

import hmac
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from itertools import accumulate
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.core.appkeys import SETTINGS
from gateway.core.errors import AuthenticationFailed, BudgetExceeded, GatewayError, RateLimited
from gateway.core.observability_settings import OBSERVABILITY_KEY, ObservabilitySettings
from gateway.core.postgres import STORAGE_ERRORS
from gateway.observability.dashboard.queries import budget_usage
from gateway.observability.node_metrics import asked_by_sibling, node_response
from gateway.tenants.auth import bearer_token
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import Ledger
from gateway.upstream.appkeys import CATALOG, FAILOVER
from gateway.upstream.failover import BreakerState, Health

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                     60.0, 120.0)
"""Whole requests, upstream calls and time to first token: from a cache hit to a long answer."""
FAST_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0)
"""In-process and local work: cache lookups, embedder calls."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
MAX_SERIES = 2000
OTHER = "other"
NONE = "none"

CacheResult = Literal["hit", "miss", "bypass"]
BUDGET_USED = "gateway_budget_used_ratio"
TENANT_BUDGET_USED = "gateway_tenant_budget_used_ratio"
SHARED_FAMILIES = frozenset({BUDGET_USED, TENANT_BUDGET_USED})
"""Families read from the tenants store, which every process of a node shares: on a node they
are read once per scrape, by the process it lands on, and carry no ``process`` label."""

RefusalKind = Literal["rate_limit", "concurrency", "budget", "authentication", "permission",
                      "invalid_request", "not_found", "method_not_allowed", "too_large",
                      "unsupported_media_type", "other"]
CACHE_RESULTS: tuple[CacheResult, ...] = ("hit", "miss", "bypass")
_KIND_BY_STATUS: dict[int, RefusalKind] = {
    400: "invalid_request", 401: "authentication", 403: "permission", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
}
BUDGET_PERIODS = ("day", "month")


# Unlocked series for the request path --------------------------------------------------------


class Count:
    """A counter's value for one label set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Buckets:
    """A histogram's figures for one label set: observations per bucket (not cumulative; the
    last one is +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value, as the library's Histogram files it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


S = TypeVar("S", "Count", "Buckets")


class _Family(Generic[S]):
    """A metric's label sets, each bound to a series object made by ``new`` on first use."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 new: Callable[[], S]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.series: dict[tuple[str, ...], S] = {}
        self._new: Callable[[], S] = new

    def child(self, *labels: str) -> S:
        """The series for ``labels``, created empty the first time (exposed from then on)."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = self._new()
        return series


class CounterFamily(_Family[Count]):
    """A counter whose label sets are ``Count``s, read at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, labelnames, Count)

    def metric(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in self.series.items():
            family.add_metric(labels, count.value)
        return family


class HistogramFamily(_Family[Buckets]):
    """A histogram whose label sets are ``Buckets``, read at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: bucket bounds must increase: {bounds}")
        super().__init__(name, documentation, labelnames, lambda: Buckets(bounds))
        self.bounds = bounds
        self._le = [*(floatToGoString(b) for b in bounds), "+Inf"]  # type: ignore[no-untyped-call]

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, b in self.series.items():
            family.add_metric(labels, list(zip(self._le, accumulate(b.counts), strict=True)),
                              b.sum)
        return family


class FamiliesCollector(Collector):
    """Exposes ``CounterFamily`` and ``HistogramFamily`` values, in the order given.

    Scrape on the thread that updates them (the event loop's): nothing here takes a lock.
    """

    def __init__(self, *families: CounterFamily | HistogramFamily) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.metric()


class _RequestSeries:
    """The children one label set of ``request_done`` touches, bound once."""

    __slots__ = ("cost", "duration", "requests", "tokens_in", "tokens_out", "ttft", "upstream")

    def __init__(self, m: Metrics, route: str, tier: str, deployment: str, status: str,
                 tenant: str | None) -> None:
        with_tenant = (tenant,) if tenant is not None else ()
        self.requests = m.requests.child(route, tier, deployment, status, *with_tenant)
        self.duration = m.request_duration.child(route, tier)
        self.upstream = m.upstream_duration.child(deployment)
        self.ttft = m.ttft.child(deployment)
        self.tokens_in = m.tokens.child(deployment, "in", *with_tenant)
        self.tokens_out = m.tokens.child(deployment, "out", *with_tenant)
        self.cost = m.cost.child(deployment, *with_tenant)


class Metrics:
    """Every metric of one gateway, in its own registry."""

    def __init__(self, *, tenant_labels: bool = False) -> None:
        # A process-wide switch of the library, read when each metric is created: the gateway never
        # wants the extra ``_created`` series, which double the output and which nothing reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.tenant_labels = tenant_labels
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[tuple[str, str, str, str, str | None], _RequestSeries] = {}
        self._escalations: dict[tuple[str, str, str], Counter] = {}
        self._overflow_logged = False
        self._define_request_metrics()
        self._define_component_metrics()
        Info("gateway_build", "The running gateway's version.", registry=self.registry).info(
            {"version": _version()}
        )

    def _define_request_metrics(self) -> None:
        r, tenant = self.registry, ("tenant",) if self.tenant_labels else ()
        self.requests = CounterFamily(
            "gateway_requests", "Chat requests answered, by route, tier, deployment and status.",
            ("route", "tier", "deployment", "status", *tenant))
        self.request_duration = HistogramFamily(
            "gateway_request_duration_seconds", "Whole request time, as the client saw it.",
            ("route", "tier"), LATENCY_BUCKETS_S)
        self.upstream_duration = HistogramFamily(
            "gateway_upstream_duration_seconds", "Upstream call time of the answering attempt.",
            ("deployment",), LATENCY_BUCKETS_S)
        self.ttft = HistogramFamily(
            "gateway_time_to_first_token_seconds", "Time to the first streamed content.",
            ("deployment",), LATENCY_BUCKETS_S)
        self.tokens = CounterFamily(
            "gateway_tokens", "Tokens used, by deployment and direction (in: prompt, out: "
            "completion).", ("deployment", "direction", *tenant))
        self.cost = CounterFamily(
            "gateway_cost_usd", "Cost of answered requests in US dollars.", ("deployment", *tenant))
        r.register(FamiliesCollector(self.requests, self.request_duration, self.upstream_duration,
                                     self.ttft, self.tokens, self.cost))
        self.refusals = Counter(
            "gateway_refusals", "Requests the gateway refused itself with a 4xx (bad key or "
            "body, unknown path, limits, budgets), by kind and tenant ('none': unknown).",
            ("kind", "tenant"), registry=r)
        self.escalations = Counter(
            "gateway_escalations", "Answers escalated to a stronger tier, and why.",
            ("from_tier", "to_tier", "reason"), registry=r)

    def _define_component_metrics(self) -> None:
        r = self.registry
        cache = CounterFamily("gateway_cache_requests", "Semantic cache lookups by result.",
                              ("result",))
        self._cache = {result: cache.child(result) for result in CACHE_RESULTS}
        lookup = HistogramFamily(
            "gateway_cache_lookup_duration_seconds", "Cache lookup time (exact and semantic).",
            (), FAST_BUCKETS_S)
        self._cache_lookup = lookup.child()
        saved = CounterFamily(
            "gateway_cache_saved_usd", "What cache hits would have cost upstream, in US dollars.")
        self._cache_saved = saved.child()
        r.register(FamiliesCollector(cache, lookup, saved))
        self.embedder_duration = Histogram(
            "gateway_embedder_duration_seconds", "Embedder call time, queueing included.",
            buckets=FAST_BUCKETS_S, registry=r)
        self.embedder_batch = Histogram(
            "gateway_embedder_batch_size", "Texts per embedder batch.",
            buckets=BATCH_BUCKETS, registry=r)
        self.embedder_queue = Gauge(
            "gateway_embedder_queue_depth", "Embedder calls waiting for an answer.", registry=r)
        self.embedder_restarts = Counter(
            "gateway_embedder_worker_restarts", "Embedder worker processes restarted.",
            registry=r)
        self.embedder_errors = Counter(
            "gateway_embedder_errors", "Embedder calls that failed or timed out.", registry=r)
        self.redis_up = Gauge(
            "gateway_redis_up", "1 while the shared Redis answers, 0 while it does not (only "
            "with [cluster] redis_url).", registry=r)
        self.redis_fallbacks = Counter(
            "gateway_redis_fallback_admissions", "Requests admitted on this replica's own "
            "counters because Redis did not answer (redis_mode fail_open).", registry=r)
        # Read at scrape time from state every process of a node shares (SHARED_FAMILIES).
        self.budget_used = Gauge(
            BUDGET_USED, "The highest share of any tenant's budget spent in the "
            "current UTC day or month (1 = spent).", ("period",), registry=r)
        self.tenant_budget_used = Gauge(
            TENANT_BUDGET_USED, "Share of each tenant's budget spent (only "
            "with tenant_labels).", ("tenant", "period"), registry=r)
        self._refusals: dict[tuple[str, str], Any] = {}

    # The request path ------------------------------------------------------------------

    def request_done(
        self, route: str | None, tier: str | None, deployment: str | None, status: int,
        latency_s: float, upstream_s: float | None = None, ttft_s: float | None = None,
        tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0, tenant: str | None = None,
    ) -> None:
        """One finished chat request (``deployment`` None: no upstream answered, or a hit)."""
        key = (route or NONE, tier or NONE, deployment or NONE, str(status),
               (tenant or NONE) if self.tenant_labels else None)
        series = self._series.get(key) or self._bind(key)
        series.requests.value += 1
        series.duration.observe(latency_s)
        if upstream_s is not None:
            series.upstream.observe(upstream_s)
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        # "> 0", not truthiness: a counter never goes down (the library raised on a negative).
        if tokens_in > 0:
            series.tokens_in.value += tokens_in
        if tokens_out > 0:
            series.tokens_out.value += tokens_out
        if cost > 0:
            series.cost.value += cost

    def _bind(self, key: tuple[str, str, str, str, str | None]) -> _RequestSeries:
        if len(self._series) >= MAX_SERIES:
            if not self._overflow_logged:
                log.warning("more than %d request label sets: new ones are counted as %r",
                            MAX_SERIES, OTHER)
                self._overflow_logged = True
            key = (OTHER, OTHER, OTHER, key[3], OTHER if key[4] is not None else None)
            if key in self._series:
                return self._series[key]
        series = self._series[key] = _RequestSeries(self, *key)
        return series

    def cache_result(self, result: CacheResult, lookup_s: float | None = None,
                     saved_usd: float = 0.0) -> None:
        """One cache lookup: hit, miss, or bypass (off for this route, or no embedding)."""
        self._cache[result].value += 1
        if lookup_s is not None:
            self._cache_lookup.observe(lookup_s)
        if saved_usd > 0:
            self._cache_saved.value += saved_usd

    def escalated(self, from_tier: str, to_tier: str, reason: str) -> None:
        key = (from_tier, to_tier, reason)
        child = self._escalations.get(key)
        if child is None:
            if len(self._escalations) >= MAX_SERIES:
                key = (OTHER, OTHER, OTHER)
            child = self._escalations[key] = self.escalations.labels(*key)
        child.inc()

    def refused(self, kind: RefusalKind, tenant: str | None = None) -> None:
        """One request refused with a 4xx. Always per tenant: tenants are made by operators,
        so the label stays bounded; an unauthenticated caller is ``none``."""
        key = (kind, tenant or NONE)
        child = self._refusals.get(key)
        if child is None:
            if len(self._refusals) >= MAX_SERIES:
                key = (kind, OTHER)
            child = self._refusals[key] = self.refusals.labels(*key)
        child.inc()

    def embedder_call(self, latency_s: float, batch: int = 1) -> None:
        self.embedder_duration.observe(latency_s)
        self.embedder_batch.observe(batch)

    def embedder_queue_depth(self, depth: int) -> None:
        self.embedder_queue.set(depth)

    def embedder_restarted(self) -> None:
        self.embedder_restarts.inc()

    def embedder_failed(self) -> None:
        self.embedder_errors.inc()

    def redis_changed(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def redis_fallback(self) -> None:
        self.redis_fallbacks.inc()

    # Set up and scrape time ------------------------------------------------------------

    def declare(self, deployments: Iterable[str]) -> None:
        """Create each deployment's series at zero, so rates exist before the first request."""
        for d in deployments:
            self.upstream_duration.child(d)
            self.ttft.child(d)
            if not self.tenant_labels:
                self.tokens.child(d, "in")
                self.tokens.child(d, "out")
                self.cost.child(d)

    def set_budget_usage(self, uses: Iterable[tuple[str, str, float]]) -> None:
        """Budget use per ``(tenant, period, share)``: the highest per period, or per tenant."""
        worst = dict.fromkeys(BUDGET_PERIODS, 0.0)
        if self.tenant_labels:
            self.tenant_budget_used.clear()
        for tenant, period, share in uses:
            worst[period] = max(worst.get(period, 0.0), share)
            if self.tenant_labels:
                self.tenant_budget_used.labels(tenant, period).set(share)
        for period, share in worst.items():
            self.budget_used.labels(period).set(share)

    def watch(self, failover: Callable[[], Mapping[str, Health] | None],
              ledger: Callable[[], Ledger | None]) -> None:
        """Read breakers and the ledger's queue at each scrape."""
        self.registry.register(StateCollector(failover, ledger))


def refusal_kind(error: GatewayError, status: int | None = None) -> RefusalKind:
    """The kind of a refusal (a 4xx the gateway answered itself), for the metric's label."""
    if isinstance(error, BudgetExceeded):
        return "budget"
    if isinstance(error, RateLimited):
        return "concurrency" if error.message.startswith("Too many concurrent") else "rate_limit"
    return _KIND_BY_STATUS.get(error.status if status is None else status, "other")


class StateCollector(Collector):
    """Breaker states and counts per deployment, and the ledger's queue, read when scraped."""

    def __init__(self, failover: Callable[[], Mapping[str, Health] | None],
                 ledger: Callable[[], Ledger | None]) -> None:
        self._failover = failover
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        yield from self._breakers(self._failover() or {})
        ledger = self._ledger()
        pending = GaugeMetricFamily("gateway_ledger_pending_rows",
                                    "Usage rows waiting to be written.")
        written = CounterMetricFamily("gateway_ledger_written_rows",
                                      "Usage rows written to the database.")
        dropped = CounterMetricFamily("gateway_ledger_dropped_rows",
                                      "Usage rows dropped because the queue was full.")
        if ledger is not None:
            pending.add_metric([], ledger.pending)
            written.add_metric([], ledger.written)
            dropped.add_metric([], ledger.dropped)
        yield from (pending, written, dropped)

    @staticmethod
    def _breakers(health: Mapping[str, Health]) -> Iterator[Metric]:
        labels = ("deployment", "provider")
        state = GaugeMetricFamily(
            "gateway_circuit_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.", labels=labels)
        attempts = CounterMetricFamily(
            "gateway_upstream_attempts", "Upstream attempts by outcome, since start.",
            labels=(*labels, "outcome"))
        for deployment_id, h in health.items():
            provider = h.deployment.provider.name
            shown = h.state
            if shown is BreakerState.OPEN and time.monotonic() >= h.open_until:
                shown = BreakerState.HALF_OPEN  # resting is over: the next request probes
            state.add_metric([deployment_id, provider], BREAKER_VALUES[shown])
            attempts.add_metric([deployment_id, provider, "success"], h.successes)
            attempts.add_metric([deployment_id, provider, "failure"], h.failures)
        yield state
        yield attempts


def _version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


# The app ---------------------------------------------------------------------------------

METRICS_KEY = web.AppKey("metrics", Metrics)


def setup_metrics(app: web.Application, settings: ObservabilitySettings) -> Metrics:
    """Put a ``Metrics`` on ``app`` that watches its failover and ledger; add ``/metrics``."""
    metrics = Metrics(tenant_labels=settings.tenant_labels)
    catalog = app.get(CATALOG)
    if catalog is not None:
        metrics.declare(d.id for d in catalog.deployments)

    def health() -> Mapping[str, Health] | None:
        failover = app.get(FAILOVER)
        return failover.health if failover is not None else None

    metrics.watch(health, lambda: app.get(LEDGER_KEY))
    app[METRICS_KEY] = metrics
    app[OBSERVABILITY_KEY] = settings
    if settings.metrics:
        add_metrics_route(app)
    return metrics


def add_metrics_route(app: web.Application) -> None:
    """``GET /metrics`` for the ``Metrics`` on ``app``: open, or behind the configured token."""
    app.router.add_get("/metrics", metrics_handler)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app.get(OBSERVABILITY_KEY) or ObservabilitySettings()
    if settings.metrics_token is not None:
        token, well_formed = bearer_token(request.headers.get("Authorization"))
        if not (well_formed and hmac.compare_digest(token.encode(),
                                                    settings.metrics_token.encode())):
            raise AuthenticationFailed("GET /metrics needs 'Authorization: Bearer <token>'.",
                                       headers={"WWW-Authenticate": "Bearer"})
    metrics = app[METRICS_KEY]
    server = app[SETTINGS].server if SETTINGS in app else None
    if server is not None and server.process_index is not None and server.node_dir is not None:
        if not asked_by_sibling(request):  # a sibling's answer leaves the shared figures out
            await _refresh_budgets(app, metrics)
        return await node_response(request, metrics.registry, server.process_index,
                                   server.node_dir, SHARED_FAMILIES)
    await _refresh_budgets(app, metrics)
    handler = make_aiohttp_handler(metrics.registry)
    return await handler(request)


async def _refresh_budgets(app: web.Application, metrics: Metrics) -> None:
    store = app.get(STORE_KEY)
    if store is None:
        return
    try:
        uses = await budget_usage(store, now=time.time())
    except STORAGE_ERRORS as exc:
        log.warning("budget figures for /metrics not refreshed: %s", exc)
        return
    metrics.set_budget_usage((u.tenant, u.period, u.share) for u in uses)
