"""The ``[observability]`` configuration section, parsed into frozen values.

``parse_observability`` receives the table, the configuration file's folder and the environment
mapping that ``gateway.core.config`` passes it; it never reads ``os.environ`` itself. The optional
``/metrics`` bearer token comes only from the environment variable named here.

    [observability]
    tenant_labels = false        # add a tenant label to per-request metrics (a series per tenant)
    access_log = true            # one JSON line per request on the "gateway.access" logger
    access_log_prompts = false   # also log the prompt (keys redacted): only where that is allowed
    dashboard = true             # the browser dashboard under /dashboard (admin key login)
    metrics = true               # GET /metrics, Prometheus text format
    metrics_token_env = ""       # a variable name: /metrics then needs "Bearer <its value>"
    session_ttl_s = 43200        # how long a dashboard login lasts (12 h)
    refresh_s = 30               # dashboard auto-refresh period, when switched on in the browser
    templates_dir = ""           # your own dashboard templates (default: the repository's)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.core.tenant_settings import env_secret
from gateway.core.toml_table import ConfigError, Table

MIN_SESSION_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    tenant_labels: bool = False
    access_log: bool = True
    access_log_prompts: bool = False
    dashboard: bool = True
    metrics: bool = True
    metrics_token_env: str = ""
    metrics_token: str | None = field(default=None, repr=False)
    session_ttl_s: float = 43_200.0
    refresh_s: int = 30
    templates_dir: Path | None = None


OBSERVABILITY_KEY = web.AppKey("observability_settings", ObservabilitySettings)


def parse_observability(
    t: Table, base_dir: Path, env: Mapping[str, str] | None = None
) -> ObservabilitySettings:
    """Validate the ``[observability]`` table; the metrics token comes from ``env``."""
    token_env = t.get("metrics_token_env", str, "")
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
        metrics_token=_token(t, token_env, env or {}),
        session_ttl_s=ttl,
        refresh_s=t.count("refresh_s", 30, minimum=5),
        templates_dir=base_dir / templates if templates else None,  # an absolute path stays itself
    )
    t.reject_unknown()
    return settings


def _token(t: Table, name: str, env: Mapping[str, str]) -> str | None:
    if not name:
        return None
    value = env_secret(t, "metrics_token_env", name, env)
    if value is None:
        raise ConfigError(f"{t.key('metrics_token_env')}: environment variable {name} is not set")
    return value


