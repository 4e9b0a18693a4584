"""The ``[observability]`` configuration section, parsed into frozen values.

``parse_observability`` receives the table, the configuration file's folder and the environment
mapping that ``gateway.core.config`` passes it; it never reads ``os.environ`` itself. The optional
``/metrics`` bearer token comes only from the environment variable named here: by default
``GATEWAY_METRICS_TOKEN``, so setting that variable is all it takes (unset: ``/metrics`` is open,
like most exporters; a variable named in the file must be set).

    [observability]
    tenant_labels = false        # add a tenant label to per-request metrics (a series per tenant)
    access_log = true            # one JSON line per request on the "gateway.access" logger
    access_log_prompts = false   # also log the prompt (keys redacted): only where that is allowed
    dashboard = true             # the browser dashboard under /dashboard (admin key login)
    metrics = true               # GET /metrics, Prometheus text format
    metrics_token_env = "GATEWAY_METRICS_TOKEN"  # when set, /metrics needs "Bearer <its value>"
    session_ttl_s = 43200        # how long a dashboard login lasts (12 h)
    refresh_s = 30               # dashboard auto-refresh period, when switched on in the browser
    templates_dir = ""           # your own dashboard templates (default: the repository's)

    [observability.tracing]      # OpenTelemetry traces and GenAI metrics over OTLP/HTTP; off
    endpoint = ""                #   unless an endpoint is given: "http://collector:4318"
    headers_env = {}             # header -> environment variable holding its value (secrets)
    sampling_ratio = 1.0         # share of new traces kept; a client's sampled parent is kept
    service_name = "llm-gateway"
    metrics = true               # also export gen_ai.client.* metrics
    export_interval_ms = 5000    # how often spans and metrics are sent
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.core.tenant_settings import env_secret
from gateway.core.toml_table import ConfigError, Table

MIN_SESSION_TTL_S = 60.0
DEFAULT_TOKEN_ENV = "GATEWAY_METRICS_TOKEN"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Where OpenTelemetry exports go; the header values are secrets from the environment."""

    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    sampling_ratio: float = 1.0
    service_name: str = "llm-gateway"
    metrics: bool = True
    export_interval_ms: float = 5000.0


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    tenant_labels: bool = False
    access_log: bool = True
    access_log_prompts: bool = False
    dashboard: bool = True
    metrics: bool = True
    metrics_token_env: str = DEFAULT_TOKEN_ENV
    metrics_token: str | None = field(default=None, repr=False)
    session_ttl_s: float = 43_200.0
    refresh_s: int = 30
    templates_dir: Path | None = None
    tracing: TracingSettings | None = None
    """None: tracing is off and the request path pays nothing for it."""


OBSERVABILITY_KEY = web.AppKey("observability_settings", ObservabilitySettings)


def parse_observability(
    t: Table, base_dir: Path, env: Mapping[str, str] | None = None
) -> ObservabilitySettings:
    """Validate the ``[observability]`` table; the metrics token comes from ``env``."""
    named = "metrics_token_env" in t.data
    token_env = t.get("metrics_token_env", str, DEFAULT_TOKEN_ENV)
    templates = t.get("templates_dir", str, "")
    ttl = t.positive("session_ttl_s", 43_200.0)
    if ttl < MIN_SESSION_TTL_S:
        raise t.fail("session_ttl_s", f"at least {MIN_SESSION_TTL_S:.0f} seconds")
    settings = ObservabilitySettings(
        tenant_labels=t.get("tenant_labels", bool, False),
        access_log=t.get("access_log", bool, True),
        access_log_prompts=t.get("access_log_prompts", bool, False),
        dashboard=t.get("dashboard", bool, True),
        metrics=t.get("metrics", bool, True),
        metrics_token_env=token_env,
        metrics_token=_token(t, token_env, env or {}, required=named),
        session_ttl_s=ttl,
        refresh_s=t.count("refresh_s", 30, minimum=5),
        templates_dir=base_dir / templates if templates else None,  # an absolute path stays itself
        tracing=parse_tracing(t.table("tracing"), env or {}),
    )
    t.reject_unknown()
    return settings


def parse_tracing(t: Table, env: Mapping[str, str]) -> TracingSettings | None:
    """The ``[observability.tracing]`` table; None (off) when it names no endpoint."""
    endpoint = t.get("endpoint", str, "").strip().rstrip("/")
    ratio = t.get("sampling_ratio", float, 1.0)
    if not 0.0 <= ratio <= 1.0:
        raise t.fail("sampling_ratio", "a number from 0 to 1")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise t.fail("endpoint", "an http:// or https:// URL")
    settings = TracingSettings(
        endpoint=endpoint,
        headers=_headers(t, env),
        sampling_ratio=ratio,
        service_name=t.get("service_name", str, "llm-gateway") or "llm-gateway",
        metrics=t.get("metrics", bool, True),
        export_interval_ms=t.positive("export_interval_ms", 5000.0),
    )
    t.reject_unknown()
    return settings if endpoint else None


def _headers(t: Table, env: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header, name in t.get("headers_env", dict, {}).items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{t.key('headers_env')}.{header}: expected a variable name")
        value = env.get(name)
        if not value:
            raise ConfigError(
                f"{t.key('headers_env')}.{header}: environment variable {name} is not set")
        headers[str(header)] = value
    return headers


def _token(t: Table, name: str, env: Mapping[str, str], *, required: bool) -> str | None:
    if not name:
        return None
    value = env_secret(t, "metrics_token_env", name, env)
    if value is None and required:
        raise ConfigError(f"{t.key('metrics_token_env')}: environment variable {name} is not set")
    return value


