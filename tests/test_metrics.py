"""Tests for gateway/observability/metrics.py, gateway/core/observability_settings.py and the
deploy/ files.

``/metrics`` is scraped after a scripted mix of requests (the same rows the dashboard tests
write to the ledger) was reported through ``Metrics``' methods; the parsed exposition must agree
with the rows.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import prometheus_client as prom
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.appkeys import SETTINGS
from gateway.core.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    RateLimited,
)
from gateway.core.observability_settings import ObservabilitySettings, parse_observability
from gateway.core.toml_table import ConfigError, Table
from gateway.observability.metrics import (
    FAST_BUCKETS_S,
    LATENCY_BUCKETS_S,
    METRICS_KEY,
    Metrics,
    refusal_kind,
)
from gateway.tenants.ledger import UsageRecord
from tests.observability_fixtures import (
    Client,
    gateway_settings,
    load_scenario,
    observability_app,
    replay_into_metrics,
    scripted_refusals,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(parsed: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return math.fsum(v for (n, ls), v in parsed.items() if n == name and wanted <= ls)


async def _scraped(aiohttp_client: Any, tmp_path: Path,
                   settings: ObservabilitySettings | None = None) -> tuple[Samples, list[
                       UsageRecord], Client]:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW,
                                                            settings=settings))
    records = await load_scenario(client.app, NOW)
    replay_into_metrics(client.app[METRICS_KEY], records)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text()), records, client


async def test_metrics_after_a_scripted_mix_agree_with_the_requests(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    parsed, records, _ = await _scraped(aiohttp_client, tmp_path)
    answered = [r for r in records if r.status != 429]
    assert total(parsed, "gateway_requests_total") == len(answered)
    for status, count in Counter(str(r.status) for r in answered).items():
        assert total(parsed, "gateway_requests_total", status=status) == count
    assert total(parsed, "gateway_requests_total", route="none") == sum(
        r.route is None for r in answered)
    assert total(parsed, "gateway_request_duration_seconds_count") == len(answered)
    assert total(parsed, "gateway_cost_usd_total") == pytest.approx(sum(r.cost for r in records))
    assert total(parsed, "gateway_tokens_total", direction="in") == sum(
        r.tokens_in for r in records)
    assert total(parsed, "gateway_tokens_total", direction="out") == sum(
        r.tokens_out for r in records)
    streamed = [r for r in answered if r.ttft_ms is not None]
    assert total(parsed, "gateway_time_to_first_token_seconds_count") == len(streamed)
    for result in ("hit", "miss", "bypass"):
        assert total(parsed, "gateway_cache_requests_total", result=result) == sum(
            r.cache == result for r in answered)
    assert total(parsed, "gateway_cache_saved_usd_total") == pytest.approx(
        sum(r.saved_cost for r in records))
    assert total(parsed, "gateway_refusals_total", kind="rate_limit") == len(records) - len(
        answered)
    assert total(parsed, "gateway_escalations_total") == sum(r.escalations > 0 for r in records)


async def test_breakers_ledger_and_budgets_are_read_at_scrape_time(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    parsed, records, _ = await _scraped(aiohttp_client, tmp_path)
    states = {dict(ls)["deployment"]: v for (n, ls), v in parsed.items()
              if n == "gateway_circuit_breaker_state"}
    assert states == {
        "groq/llama-3.1-8b-instant": 0, "gemini/gemini-2.0-flash": 0,
        "groq/llama-3.3-70b-versatile": 0, "vllm/meta-llama/Llama-3.3-70B-Instruct": 1,
        "anthropic/claude-sonnet-4-0": 2,
    }
    assert total(parsed, "gateway_upstream_attempts_total", outcome="failure",
                 deployment="anthropic/claude-sonnet-4-0") == 3
    written = len(records) + len(scripted_refusals(NOW))  # usage rows and refusal rows
    assert total(parsed, "gateway_ledger_written_rows_total") == written
    assert total(parsed, "gateway_ledger_dropped_rows_total") == 0
    today = time.strftime("%Y-%m-%d", time.gmtime(NOW))
    acme_today = sum(r.cost for r in records if r.tenant == "acme" and
                     time.strftime("%Y-%m-%d", time.gmtime(r.ts)) == today)
    globex_today = sum(r.cost for r in records if r.tenant == "globex" and
                       time.strftime("%Y-%m-%d", time.gmtime(r.ts)) == today)
    assert total(parsed, "gateway_budget_used_ratio", period="day") == pytest.approx(
        max(acme_today / 0.5, globex_today / 5.0))
    assert ("gateway_build_info", frozenset({("version", "0.1.0")})) in parsed


async def test_a_node_process_reads_budgets_for_its_own_scrape_not_for_a_sibling_s(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    # On a node the budgets (shared state) come once per scrape, from the process it landed
    # on, without a process label, so an alert on them is one series whichever process answers.
    app = observability_app(tmp_path, now=NOW)
    gateway = gateway_settings(tmp_path)
    app[SETTINGS] = replace(gateway, server=replace(gateway.server, process_index=3,
                                                    node_dir=tmp_path / "node"))
    (tmp_path / "node").mkdir()
    client: Client = await aiohttp_client(app)
    await load_scenario(client.app, NOW)
    scrape = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(await scrape.text())}
    budget = families["gateway_budget_used_ratio"].samples
    assert {s.labels["period"] for s in budget} == {"day", "month"}
    assert not any("process" in s.labels for s in budget)
    assert max(s.value for s in budget) > 0
    assert {s.labels["process"] for s in families["gateway_build_info"].samples} == {"3"}
    sibling = await (await client.get("/metrics", params={"scope": "process"})).text()
    assert "gateway_build_info" in sibling
    assert "gateway_budget_used_ratio" not in sibling


async def test_tenant_labels_appear_only_when_configured(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    parsed, _, _ = await _scraped(aiohttp_client, tmp_path)
    # Refusals are always counted per tenant (rare, and tenants are bounded); nothing else is.
    assert not any("tenant" in dict(ls) for name, ls in parsed
                   if name != "gateway_refusals_total")
    labelled, records, _ = await _scraped(aiohttp_client, tmp_path / "labelled",
                                          ObservabilitySettings(tenant_labels=True))
    acme = [r for r in records if r.tenant == "acme" and r.status != 429]
    assert total(labelled, "gateway_requests_total", tenant="acme") == len(acme)
    assert total(labelled, "gateway_cost_usd_total", tenant="acme") == pytest.approx(
        sum(r.cost for r in acme))
    assert total(labelled, "gateway_tenant_budget_used_ratio", tenant="acme", period="day") > 0


def test_each_app_has_its_own_registry_and_the_global_one_stays_clean() -> None:
    one, two = Metrics(), Metrics()
    one.request_done("code", "cheap", "p/m", 200, 0.5)
    assert one.registry.get_sample_value(
        "gateway_requests_total",
        {"route": "code", "tier": "cheap", "deployment": "p/m", "status": "200"}) == 1
    assert two.registry.get_sample_value(
        "gateway_requests_total",
        {"route": "code", "tier": "cheap", "deployment": "p/m", "status": "200"}) is None
    assert REGISTRY.get_sample_value("gateway_requests_total") is None


def test_label_sets_beyond_the_cap_are_counted_as_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.observability.metrics.MAX_SERIES", 3)
    metrics = Metrics()
    for i in range(6):
        metrics.request_done(f"route-{i}", "cheap", "p/m", 200, 0.1)
    other = {"route": "other", "tier": "other", "deployment": "other", "status": "200"}
    assert metrics.registry.get_sample_value("gateway_requests_total", other) == 3


# The request path's exposition -------------------------------------------------------------

REQUEST_FAMILIES = (
    "gateway_requests", "gateway_request_duration_seconds", "gateway_upstream_duration_seconds",
    "gateway_time_to_first_token_seconds", "gateway_tokens", "gateway_cost_usd",
    "gateway_cache_requests", "gateway_cache_lookup_duration_seconds", "gateway_cache_saved_usd",
)


def exposition_blocks(registry: prom.CollectorRegistry) -> dict[str, str]:
    """The text format of each family in ``registry``, from its HELP line to the next one."""
    blocks: dict[str, list[str]] = {}
    for line in prom.generate_latest(registry).decode().splitlines():
        if line.startswith("# HELP "):
            current = blocks.setdefault(line.split()[2].removesuffix("_total"), [])
        current.append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def histogram_lines(name: str, labels: dict[str, str], bounds: tuple[float, ...],
                    values: list[float], total: float) -> list[str]:
    """A histogram series in the text format: cumulative buckets, +Inf, count and sum."""

    def braces(extra: dict[str, str]) -> str:
        pairs = sorted({**labels, **extra}.items())  # the text format sorts label names
        return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else ""

    lines = [f"{name}_bucket{braces({'le': repr(b)})} {float(sum(v <= b for v in values))}"
             for b in bounds]
    lines.append(f"{name}_bucket{braces({'le': '+Inf'})} {float(len(values))}")
    return [*lines, f"{name}_count{braces({})} {float(len(values))}",
            f"{name}_sum{braces({})} {total!r}"]


def test_request_metrics_are_exposed_as_counters_and_cumulative_histograms() -> None:
    metrics = Metrics()
    metrics.request_done("code", "cheap", "p/a", 200, 0.5, 0.25, 0.125, 10, 4, 0.25)
    metrics.request_done("code", "cheap", "p/a", 200, 150.0, 0.005, None, 6, 0, 0.5)
    metrics.request_done(None, None, None, 200, 0.005)  # a cache hit, right on the first bound
    metrics.cache_result("hit", 0.0001, 0.125)
    metrics.cache_result("miss", 2.0)
    metrics.cache_result("bypass")
    blocks = exposition_blocks(metrics.registry)
    lat, fast = LATENCY_BUCKETS_S, FAST_BUCKETS_S
    route, none = {"route": "code", "tier": "cheap"}, {"route": "none", "tier": "none"}
    want = {
        "gateway_requests": [
            "# HELP gateway_requests_total Chat requests answered, by route, tier, deployment "
            "and status.",
            "# TYPE gateway_requests_total counter",
            'gateway_requests_total{deployment="p/a",route="code",status="200",tier="cheap"} 2.0',
            'gateway_requests_total{deployment="none",route="none",status="200",tier="none"} 1.0',
        ],
        "gateway_request_duration_seconds": [
            "# HELP gateway_request_duration_seconds Whole request time, as the client saw it.",
            "# TYPE gateway_request_duration_seconds histogram",
            *histogram_lines("gateway_request_duration_seconds", route, lat, [0.5, 150.0],
                             150.5),
            *histogram_lines("gateway_request_duration_seconds", none, lat, [0.005], 0.005),
        ],
        "gateway_upstream_duration_seconds": [
            "# HELP gateway_upstream_duration_seconds Upstream call time of the answering "
            "attempt.",
            "# TYPE gateway_upstream_duration_seconds histogram",
            *histogram_lines("gateway_upstream_duration_seconds", {"deployment": "p/a"}, lat,
                             [0.25, 0.005], 0.25 + 0.005),
            *histogram_lines("gateway_upstream_duration_seconds", {"deployment": "none"}, lat, [],
                             0.0),
        ],
        "gateway_time_to_first_token_seconds": [
            "# HELP gateway_time_to_first_token_seconds Time to the first streamed content.",
            "# TYPE gateway_time_to_first_token_seconds histogram",
            *histogram_lines("gateway_time_to_first_token_seconds", {"deployment": "p/a"}, lat,
                             [0.125], 0.125),
            *histogram_lines("gateway_time_to_first_token_seconds", {"deployment": "none"}, lat, [],
                             0.0),
        ],
        "gateway_tokens": [
            "# HELP gateway_tokens_total Tokens used, by deployment and direction (in: prompt, "
            "out: completion).",
            "# TYPE gateway_tokens_total counter",
            'gateway_tokens_total{deployment="p/a",direction="in"} 16.0',
            'gateway_tokens_total{deployment="p/a",direction="out"} 4.0',
            'gateway_tokens_total{deployment="none",direction="in"} 0.0',
            'gateway_tokens_total{deployment="none",direction="out"} 0.0',
        ],
        "gateway_cost_usd": [
            "# HELP gateway_cost_usd_total Cost of answered requests in US dollars.",
            "# TYPE gateway_cost_usd_total counter",
            'gateway_cost_usd_total{deployment="p/a"} 0.75',
            'gateway_cost_usd_total{deployment="none"} 0.0',
        ],
        "gateway_cache_requests": [
            "# HELP gateway_cache_requests_total Semantic cache lookups by result.",
            "# TYPE gateway_cache_requests_total counter",
            'gateway_cache_requests_total{result="hit"} 1.0',
            'gateway_cache_requests_total{result="miss"} 1.0',
            'gateway_cache_requests_total{result="bypass"} 1.0',
        ],
        "gateway_cache_lookup_duration_seconds": [
            "# HELP gateway_cache_lookup_duration_seconds Cache lookup time (exact and semantic).",
            "# TYPE gateway_cache_lookup_duration_seconds histogram",
            *histogram_lines("gateway_cache_lookup_duration_seconds", {}, fast, [0.0001, 2.0],
                             0.0001 + 2.0),
        ],
        "gateway_cache_saved_usd": [
            "# HELP gateway_cache_saved_usd_total What cache hits would have cost upstream, in "
            "US dollars.",
            "# TYPE gateway_cache_saved_usd_total counter",
            "gateway_cache_saved_usd_total 0.125",
        ],
    }
    assert {name: blocks[name].splitlines() for name in REQUEST_FAMILIES} == want
    assert list(blocks)[:6] == list(REQUEST_FAMILIES[:6])


class LibraryReference:
    """The request metrics as prometheus_client's own ``Counter`` and ``Histogram`` keep them,
    bound in the order, and capped at ``MAX_SERIES`` the way, ``Metrics`` documents."""

    def __init__(self, metrics: Metrics, max_series: int) -> None:
        self.tenant_labels, self.max_series = metrics.tenant_labels, max_series
        self.registry = prom.CollectorRegistry()
        self.seen: set[tuple[str, ...]] = set()
        r = self.registry
        self.requests, self.tokens, self.cost = (
            prom.Counter(f.name, f.documentation, f.labelnames, registry=r)
            for f in (metrics.requests, metrics.tokens, metrics.cost))
        self.duration, self.upstream, self.ttft = (
            prom.Histogram(f.name, f.documentation, f.labelnames, buckets=f.bounds, registry=r)
            for f in (metrics.request_duration, metrics.upstream_duration, metrics.ttft))

    def request_done(self, route: str | None, tier: str | None, deployment: str | None,
                     status: int, latency_s: float, upstream_s: float | None,
                     ttft_s: float | None, tokens_in: int, tokens_out: int, cost: float,
                     tenant: str | None) -> None:
        labels = [route or "none", tier or "none", deployment or "none", str(status)]
        tenants = [tenant or "none"] if self.tenant_labels else []
        if (*labels, *tenants) not in self.seen and len(self.seen) >= self.max_series:
            labels[:3], tenants = ["other"] * 3, ["other"] * len(tenants)
        self.seen.add((*labels, *tenants))
        route, tier, deployment = labels[:3]
        self.requests.labels(*labels, *tenants).inc()
        self.duration.labels(route, tier).observe(latency_s)
        upstream, ttft = self.upstream.labels(deployment), self.ttft.labels(deployment)
        tokens = [self.tokens.labels(deployment, d, *tenants) for d in ("in", "out")]
        spent = self.cost.labels(deployment, *tenants)
        if upstream_s is not None:
            upstream.observe(upstream_s)
        if ttft_s is not None:
            ttft.observe(ttft_s)
        for counter, n in zip(tokens, (tokens_in, tokens_out), strict=True):
            counter.inc(n)
        spent.inc(cost)


@pytest.mark.parametrize("tenant_labels", [False, True])
def test_request_metrics_expose_what_the_library_metrics_would(
    monkeypatch: pytest.MonkeyPatch, tenant_labels: bool
) -> None:
    monkeypatch.setattr("gateway.observability.metrics.MAX_SERIES", 40)
    metrics = Metrics(tenant_labels=tenant_labels)
    reference = LibraryReference(metrics, 40)
    rng = random.Random(7)
    bounds = [*LATENCY_BUCKETS_S, 0.0, 1e-9, 500.0]
    for i in range(2000):
        latency = rng.choice(bounds) if i % 4 == 0 else rng.expovariate(2.0)
        args = (rng.choice(["code", "chat", None]) if i < 1500 else f"route-{i % 30}",
                rng.choice(["cheap", "reasoning", None]),
                rng.choice(["p/a", "p/b", "q/c", None]), rng.choice([200, 200, 429, 502]),
                latency, rng.choice([None, rng.random(), rng.choice(bounds)]),
                rng.choice([None, rng.random() / 10]), rng.randrange(0, 2000),
                rng.choice([0, rng.randrange(1, 500)]), rng.choice([0.0, rng.random() / 1000]),
                rng.choice(["acme", "globex", None]))
        metrics.request_done(*args)
        reference.request_done(*args)
    blocks, want = exposition_blocks(metrics.registry), exposition_blocks(reference.registry)
    assert 'route="other"' in want["gateway_requests"]
    assert {name: blocks[name] for name in want} == want


def test_embedder_and_cache_calls_land_in_their_metrics() -> None:
    metrics = Metrics()
    metrics.embedder_call(0.004, batch=8)
    metrics.embedder_queue_depth(3)
    metrics.embedder_restarted()
    metrics.embedder_failed()
    metrics.cache_result("bypass")
    get = metrics.registry.get_sample_value
    assert get("gateway_embedder_batch_size_sum") == 8
    assert get("gateway_embedder_duration_seconds_count") == 1
    assert get("gateway_embedder_queue_depth") == 3
    assert get("gateway_embedder_worker_restarts_total") == 1
    assert get("gateway_embedder_errors_total") == 1
    assert get("gateway_cache_requests_total", {"result": "bypass"}) == 1
    assert get("gateway_cache_lookup_duration_seconds_count") == 0


def test_refusals_are_classified_by_the_error_the_gateway_raised() -> None:
    assert refusal_kind(BudgetExceeded("over", retry_after_s=60)) == "budget"
    assert refusal_kind(RateLimited("Rate limit reached", retry_after_s=1)) == "rate_limit"
    assert refusal_kind(RateLimited("Too many concurrent requests for tenant acme: limit 2.",
                                    retry_after_s=1)) == "concurrency"
    assert refusal_kind(InvalidRequest("bad")) == "invalid_request"
    assert refusal_kind(InvalidRequest("too big"), 413) == "too_large"
    assert refusal_kind(AuthenticationFailed("no key")) == "authentication"
    assert refusal_kind(GatewayError("teapot"), 418) == "other"


async def test_metrics_can_require_a_bearer_token(aiohttp_client: Any, tmp_path: Path) -> None:
    token = "metrics-token-0123456789"
    settings = ObservabilitySettings(metrics_token_env="T", metrics_token=token)
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW,
                                                            settings=settings))
    for headers in ({}, {"Authorization": "Bearer wrong-token-000000000"},
                    {"Authorization": token}):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status == 200 and "gateway_requests_total" in await allowed.text()


async def test_openmetrics_is_served_to_a_scraper_that_asks(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


# Settings ----------------------------------------------------------------------------------


def test_observability_settings_default_to_safe_values(tmp_path: Path) -> None:
    settings = parse_observability(Table({}, "observability"), tmp_path)
    assert settings == ObservabilitySettings()
    assert not settings.tenant_labels and settings.access_log and not settings.access_log_prompts


def test_the_metrics_token_is_set_by_its_default_variable_alone(tmp_path: Path) -> None:
    table = Table({}, "observability")
    settings = parse_observability(table, tmp_path, {"GATEWAY_METRICS_TOKEN": "t" * 20})
    assert settings.metrics_token == "t" * 20
    assert parse_observability(table, tmp_path, {}).metrics_token is None, "open when unset"


def test_observability_settings_read_every_key(tmp_path: Path) -> None:
    table = Table({"tenant_labels": True, "access_log": False, "access_log_prompts": True,
                   "dashboard": False, "metrics": False, "metrics_token_env": "TOKEN",
                   "session_ttl_s": 600, "refresh_s": 10, "templates_dir": "tpl"},
                  "observability")
    settings = parse_observability(table, tmp_path, {"TOKEN": "x" * 20})
    assert settings.metrics_token == "x" * 20 and "x" * 20 not in repr(settings)
    assert settings.templates_dir == tmp_path / "tpl" and settings.session_ttl_s == 600.0


@pytest.mark.parametrize(("data", "env", "message"), [
    ({"colour": "blue"}, {}, "observability.colour: unknown key"),
    ({"tenant_labels": "yes"}, {}, "observability.tenant_labels: expected true or false"),
    ({"metrics_token_env": "TOKEN"}, {}, "TOKEN is not set"),
    ({"metrics_token_env": "TOKEN"}, {"TOKEN": "short"}, "at least 16 characters"),
    ({"session_ttl_s": 5}, {}, "observability.session_ttl_s: expected at least 60 seconds"),
])
def test_bad_observability_settings_name_the_key(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_observability(Table(data, "observability"), tmp_path, env)


# The deploy/ files -------------------------------------------------------------------------


def _exposed_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "info": ("_info",)}.get(family.type, ())
        names.update(family.name + s for s in suffixes)
        names.update(s.name for s in family.samples)
    return names


@pytest.mark.parametrize("path", ["deploy/alerts.yml", "deploy/grafana-dashboard.json"])
async def test_alerts_and_grafana_use_only_metrics_that_exist(
    aiohttp_client: Any, tmp_path: Path, path: str
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    exposed = _exposed_names(await (await client.get("/metrics")).text())
    used = set(re.findall(r"\bgateway_[a-z_]+", (ROOT / path).read_text()))
    assert used and used <= exposed, sorted(used - exposed)


def test_alerts_cover_provider_down_error_rate_and_budgets() -> None:
    alerts = (ROOT / "deploy/alerts.yml").read_text()
    for name in ("ProviderDown", "HighErrorRate", "MonthlyBudgetNearlySpent"):
        assert f"alert: {name}" in alerts
    assert "metrics_path: /metrics" in (ROOT / "deploy/prometheus.yml").read_text()
