"""Tests for gateway/metrics.py, gateway/observability_settings.py and the deploy/ files.

``/metrics`` is scraped after a scripted mix of requests (the same rows the dashboard tests
write to the ledger) was reported through ``Metrics``' methods; the parsed exposition must agree
with the rows.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import BudgetExceeded, InvalidRequest, RateLimited
from gateway.metrics import METRICS_KEY, Metrics, refusal_kind
from gateway.observability_settings import ObservabilitySettings, parse_observability
from gateway.tenants.ledger import UsageRecord
from gateway.toml_table import ConfigError, Table
from tests.observability_fixtures import (
    Client,
    load_scenario,
    observability_app,
    replay_into_metrics,
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
    assert total(parsed, "gateway_ledger_written_rows_total") == len(records)
    assert total(parsed, "gateway_ledger_dropped_rows_total") == 0
    today = time.strftime("%Y-%m-%d", time.gmtime(NOW))
    acme_today = sum(r.cost for r in records if r.tenant == "acme" and
                     time.strftime("%Y-%m-%d", time.gmtime(r.ts)) == today)
    globex_today = sum(r.cost for r in records if r.tenant == "globex" and
                       time.strftime("%Y-%m-%d", time.gmtime(r.ts)) == today)
    assert total(parsed, "gateway_budget_used_ratio", period="day") == pytest.approx(
        max(acme_today / 0.5, globex_today / 5.0))
    assert ("gateway_build_info", frozenset({("version", "0.1.0")})) in parsed


async def test_tenant_labels_appear_only_when_configured(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    parsed, _, _ = await _scraped(aiohttp_client, tmp_path)
    assert not any("tenant" in dict(ls) for _, ls in parsed)
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
    monkeypatch.setattr("gateway.metrics.MAX_SERIES", 3)
    metrics = Metrics()
    for i in range(6):
        metrics.request_done(f"route-{i}", "cheap", "p/m", 200, 0.1)
    other = {"route": "other", "tier": "other", "deployment": "other", "status": "200"}
    assert metrics.registry.get_sample_value("gateway_requests_total", other) == 3


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


def test_refusals_are_classified_by_the_error_admission_raised() -> None:
    assert refusal_kind(BudgetExceeded("over", retry_after_s=60)) == "budget"
    assert refusal_kind(RateLimited("Rate limit reached", retry_after_s=1)) == "rate_limit"
    assert refusal_kind(RateLimited("Too many concurrent requests for tenant acme: limit 2.",
                                    retry_after_s=1)) == "concurrency"
    assert refusal_kind(InvalidRequest("bad")) is None


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
