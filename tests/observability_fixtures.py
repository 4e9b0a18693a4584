"""Helpers for the observability tests: an app with the tenants store, metrics and dashboard,
a scripted mix of requests written through the real ledger, and the figures expected from it.

The mix is deterministic (a seeded generator) and spread over the past days, with most of it in
the last 24 hours and the last hour, so every page and window has something to show. Breakers
are driven through ``Health``'s own methods: one deployment open, one probing, the rest healthy.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import errors_middleware
from gateway.core.config import Settings, parse
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.core.observability_settings import ObservabilitySettings
from gateway.core.tenant_settings import Limits
from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard.site import setup_dashboard
from gateway.observability.metrics import Metrics, setup_metrics
from gateway.tenants.context import (
    AUTH_KEY,
    CONFIG_KEY,
    LEDGER_KEY,
    STORE_KEY,
    TenantsConfig,
    tenants_context,
)
from gateway.tenants.ledger import RefusalRecord, UsageRecord, day_of, month_start_of
from gateway.tenants.rollups import bucket_value, latency_bucket, whole_hours
from gateway.upstream.appkeys import CATALOG, FAILOVER
from gateway.upstream.catalog import Catalog
from gateway.upstream.failover import Failover
from tests.tenant_fixtures import ADMIN_KEY, tenant_settings

Client = TestClient[web.Request, web.Application]

MODELS = (
    # name, provider, tier, upstream model, input and output price per million tokens
    ("llama-3.1-8b-instant", "groq", "cheap", "llama-3.1-8b-instant", 0.05, 0.08),
    ("gemini-2.0-flash", "gemini", "cheap", "gemini-2.0-flash", 0.10, 0.40),
    ("llama-3.3-70b", "groq", "reasoning", "llama-3.3-70b-versatile", 0.59, 0.79),
    ("llama-3.3-70b", "vllm", "reasoning", "meta-llama/Llama-3.3-70B-Instruct", 0.0, 0.0),
    ("claude-sonnet-4", "anthropic", "reasoning", "claude-sonnet-4-0", 3.0, 15.0),
)
TENANTS = {
    "acme": Limits(requests_per_minute=600, tokens_per_minute=200_000, daily_budget_usd=0.5,
                   monthly_budget_usd=20.0),
    "globex": Limits(requests_per_minute=120, daily_budget_usd=5.0),
    "initech": Limits(),
}
ROUTES = (("code", "reasoning"), ("chitchat", "cheap"), ("math", "reasoning"),
          ("summarise", "cheap"), (None, None))
LEAKED = "gw-" + "A1b2C3d4" * 6
OPEN_ERROR = f"server_error: upstream said 503 (key {LEAKED} rejected)"


def gateway_settings(tmp_path: Path) -> Settings:
    """Five deployments over four demo-kind providers (no network is ever used)."""
    providers = sorted({m[1] for m in MODELS})
    config = {
        "server": {"data_dir": str(tmp_path / "data")},
        "providers": [{"name": p, "kind": "demo"} for p in providers],
        "models": [
            {"name": n, "provider": p, "tier": t, "upstream_model": u,
             "input_price_per_mtok": i, "output_price_per_mtok": o}
            for n, p, t, u, i, o in MODELS
        ],
        "embedder": {"enabled": False},
    }
    return parse(config, env={}, base_dir=tmp_path, source="<test>")


def observability_app(
    tmp_path: Path, *, now: float, settings: ObservabilitySettings | None = None
) -> web.Application:
    """Tenants store, failover state, metrics and dashboard, with the dashboard's clock at
    ``now``."""
    obs = settings or ObservabilitySettings()
    app = web.Application(middlewares=[errors_middleware])
    app[CONFIG_KEY] = TenantsConfig(tenant_settings(), tmp_path / "data")
    app.cleanup_ctx.append(tenants_context)
    gateway = gateway_settings(tmp_path)
    catalog = Catalog.from_settings(gateway)
    app[CATALOG] = catalog
    app[FAILOVER] = Failover(catalog.deployments, {}, gateway.failover)
    setup_metrics(app, obs)
    setup_dashboard(app, obs, clock=lambda: now)
    return app


def shape_health(failover: Failover) -> None:
    """Healthy deployments with speeds, Anthropic open after errors, vLLM probing."""
    mono = time.monotonic()
    for i, h in enumerate(failover.health.values()):
        for k in range(5 + i):
            h.record_success(300.0 + 90 * i + 10 * k, 120.0 + 30 * i)
    claude = failover.health["anthropic/claude-sonnet-4-0"]
    for message in ("timeout: no first byte in 60 s", "connect: connection refused", OPEN_ERROR):
        kind = FailureKind(message.split(":")[0])
        claude.record_failure(UpstreamFailure(kind, message.split(": ", 1)[1]), mono)
    vllm = failover.health["vllm/meta-llama/Llama-3.3-70B-Instruct"]
    for _ in range(3):
        vllm.record_failure(UpstreamFailure(FailureKind.CONNECT, "connection refused"), mono)
    vllm.open_until = mono - 1  # its rest is over: the next request probes


def scripted_records(now: float, count: int = 420, seed: int = 7) -> list[UsageRecord]:
    """A deterministic mix: half in the last hour, most of the rest today, some earlier."""
    rng = random.Random(seed)
    deployments = [(m[0], f"{m[1]}/{m[3]}", m[2], m[4], m[5]) for m in MODELS]
    out: list[float] = []
    for _ in range(count):
        share = rng.random()
        age = (rng.uniform(5, 3500) if share < 0.5 else rng.uniform(3700, 80_000)
               if share < 0.9 else rng.uniform(90_000, 6 * 86_400))
        out.append(now - age)
    # Ledger rows arrive in time order; ids follow them.
    return [_record(rng, i, ts, deployments) for i, ts in enumerate(sorted(out))]


def _record(rng: random.Random, i: int, ts: float,
            deployments: Sequence[tuple[str, str, str, float, float]]) -> UsageRecord:
    route, tier = rng.choice(ROUTES)
    fitting = [d for d in deployments if tier is None or d[2] == tier]
    model, deployment, dep_tier, price_in, price_out = rng.choice(fitting)
    tenant = rng.choice(sorted(TENANTS))
    status = rng.choices((200, 429, 502), weights=(90, 6, 4))[0]
    cache = rng.choices(("hit", "miss", "bypass", None), weights=(20, 55, 15, 10))[0]
    if status == 502 and cache == "hit":
        cache = "miss"  # a hit never reaches a provider, so it cannot fail there
    ok = status < 400
    hit = ok and cache == "hit"
    tokens_in = rng.randint(20, 2000) if ok else 0
    tokens_out = rng.randint(5, 800) if ok and not hit else 0
    full = (tokens_in * price_in + rng.randint(5, 800) * price_out) / 1e6
    cost = 0.0 if hit or not ok else (tokens_in * price_in + tokens_out * price_out) / 1e6
    stream = rng.random() < 0.6
    latency = rng.lognormvariate(6.3, 0.7) if ok and not hit else rng.uniform(2, 40)
    answered = not hit and status != 429
    return UsageRecord(
        request_id=f"req_{i:06d}{rng.getrandbits(32):08x}", tenant=tenant, key_id=f"key_{tenant}",
        model="auto" if route else model, status=status, ts=ts, route=route,
        tier=tier or dep_tier, deployment=deployment if answered else None,
        answered_model=model if answered else None,
        tokens_in=tokens_in, tokens_out=tokens_out, cost=cost,
        cache=cache if status != 429 else None, saved_cost=full if hit else 0.0,
        escalations=1 if ok and rng.random() < 0.08 else 0, attempts=1 if ok else 2,
        latency_ms=round(latency, 3), ttft_ms=round(latency * 0.3, 3) if stream and ok else None,
        api=rng.choices(("chat", "messages", "responses"), weights=(70, 20, 10))[0],
    )


REFUSALS = ((401, "invalid_api_key", None), (400, "invalid_request_error", "acme"),
            (429, "rate_limit_exceeded", "globex"), (413, "request_too_large", "acme"),
            (404, "not_found_error", None))


def scripted_refusals(now: float, count: int = 40, seed: int = 11) -> list[RefusalRecord]:
    """Refusals over the last week, in time order, a quarter of them in the last hour."""
    rng = random.Random(seed)
    times = sorted(now - (rng.uniform(5, 3500) if rng.random() < 0.25 else
                          rng.uniform(3700, 6.5 * 86_400)) for _ in range(count))
    out = []
    for i, ts in enumerate(times):
        status, code, tenant = rng.choice(REFUSALS)
        out.append(RefusalRecord(ts=ts, request_id=f"ref_{i:04d}{rng.getrandbits(24):06x}",
                                 api="/v1/chat/completions", method="POST", status=status,
                                 code=code, tenant=tenant,
                                 key_id=f"key_{tenant}" if tenant else None))
    return out


async def load_scenario(app: web.Application, now: float) -> list[UsageRecord]:
    """Create the tenants and keys, write the scripted mix (and refusals) through the ledger,
    shape health."""
    store, auth = app[STORE_KEY], app[AUTH_KEY]
    for name, limits in TENANTS.items():
        await store.create_tenant(name, limits)
        await store.create_key(auth.secret, name, name="main")
    await auth.reload(store)
    records = scripted_records(now)
    ledger = app[LEDGER_KEY]
    for r in records:
        assert ledger.record(r)
    for refusal in scripted_refusals(now):
        ledger.refuse(refusal)
    await ledger.flush()
    shape_health(app[FAILOVER])
    return records


def replay_into_metrics(metrics: Metrics, records: Iterable[UsageRecord]) -> None:
    """What the request path would have told ``metrics`` for each of ``records``."""
    for r in records:
        if r.status == 429:
            metrics.refused("rate_limit", r.tenant)
            continue
        upstream = r.latency_ms * 0.9 / 1000 if r.deployment else None
        metrics.request_done(
            r.route, r.tier, r.deployment, r.status, r.latency_ms / 1000, upstream,
            r.ttft_ms / 1000 if r.ttft_ms is not None else None, r.tokens_in, r.tokens_out,
            r.cost, r.tenant,
        )
        if r.cache is not None:
            metrics.cache_result(r.cache, 0.0004, r.saved_cost)  # type: ignore[arg-type]
        if r.escalations:
            metrics.escalated("cheap", "reasoning", "check_failed")


async def login(client: Client, key: str = ADMIN_KEY) -> Any:
    return await client.post("/dashboard/login", data={"key": key, "next": "/dashboard"},
                             allow_redirects=False)


# Expected figures --------------------------------------------------------------------------

def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The smallest value whose cumulative share reaches ``q`` (as SQLite's cume_dist)."""
    ordered = sorted(values)
    n = len(ordered)
    for k in range(1, n + 1):
        if k / n >= q:
            return ordered[k - 1]
    return None


@dataclass(frozen=True, slots=True)
class Expected:
    requests: int
    errors: int
    hits: int
    misses: int
    escalated: int
    cost: float
    p50: float | None
    p95: float | None
    p99: float | None
    ttft_p50: float | None
    cost_today: float
    cost_month: float


def expected(records: Sequence[UsageRecord], since: float, now: float) -> Expected:
    inside = [r for r in records if since <= r.ts < now]
    ok = [r.latency_ms for r in inside if r.status < 400]
    ttft = [r.ttft_ms for r in inside if r.status < 400 and r.ttft_ms is not None]
    today, month = day_of(now), month_start_of(now)
    return Expected(
        requests=len(inside),
        errors=sum(r.status >= 400 for r in inside),
        hits=sum(r.cache == "hit" for r in inside),
        misses=sum(r.cache == "miss" for r in inside),
        escalated=sum(r.escalations > 0 for r in inside),
        cost=math.fsum(r.cost for r in inside),
        p50=nearest_rank(ok, 0.5), p95=nearest_rank(ok, 0.95), p99=nearest_rank(ok, 0.99),
        ttft_p50=nearest_rank(ttft, 0.5),
        cost_today=math.fsum(r.cost for r in records if day_of(r.ts) == today and r.ts <= now),
        cost_month=math.fsum(r.cost for r in records if day_of(r.ts) >= month and r.ts <= now),
    )


def shown_percentile(value: float | None, since: float, until: float) -> str:
    """How the overview prints an exact percentile ``value`` of ``[since, until)``: as is when
    the window holds no whole hour (raw rows), else as the middle of its histogram bucket."""
    if whole_hours(since, until)[0] >= until or value is None:
        return fmt.ms(value)
    bucket = latency_bucket(value)
    assert bucket is not None
    return "≈ " + fmt.ms(bucket_value(bucket))


_METRIC = re.compile(r'data-metric="([^"]+)">([^<]*)<')


def page_metrics(html: str) -> dict[str, str]:
    """The figures a page marks with ``data-metric``, as shown."""
    return {name: value.strip() for name, value in _METRIC.findall(html)}
