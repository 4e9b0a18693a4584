"""A dashboard app with routing running, and a scripted routing history, for the routing page's
tests (tests/test_dashboard_routing.py, tests/test_browser.py).

The app is the observability tests' one (tenants store, failover state, metrics, dashboard) with
the routing cleanup context added before the dashboard, so the signal store is real and the
page reads it through its own connection. The history is written through the real ledger and
the real signal store; ``RoutingHistory`` holds the figures the page should show for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.app import errors_middleware
from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.dashboard.site import setup_dashboard
from gateway.observability.metrics import setup_metrics
from gateway.routing import context as routing
from gateway.routing.context import SIGNALS
from gateway.routing.escalation import EscalationKind, EscalationReason
from gateway.routing.policy import Decision, LearnedNote, Reason, TierEstimate
from gateway.routing.signals import Answered
from gateway.tenants.context import CONFIG_KEY, LEDGER_KEY, TenantsConfig, tenants_context
from gateway.tenants.ledger import UsageRecord
from gateway.upstream.appkeys import CATALOG, FAILOVER
from gateway.upstream.catalog import Catalog
from gateway.upstream.failover import Failover
from tests.observability_fixtures import gateway_settings
from tests.tenant_fixtures import tenant_settings

AHEAD_S = 60.0
"""The page's clock runs this far ahead, so what the test writes now is inside every window."""


def routing_dashboard_app(tmp_path: Path) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    app[CONFIG_KEY] = TenantsConfig(tenant_settings(), tmp_path / "data")
    app.cleanup_ctx.append(tenants_context)
    settings = gateway_settings(tmp_path)
    catalog = Catalog.from_settings(settings)
    app[CATALOG] = catalog
    app[FAILOVER] = Failover(catalog.deployments, {}, settings.failover)
    routing.configure(app, routing.RoutingConfig(
        settings=settings.routing, data_dir=settings.server.data_dir, tiers=catalog.tiers))
    setup_metrics(app, ObservabilitySettings())
    setup_dashboard(app, ObservabilitySettings(), clock=lambda: time.time() + AHEAD_S)
    return app


@dataclass(frozen=True, slots=True)
class RoutingHistory:
    routed: int
    cheap: int
    reasoning: int
    escalated: int
    good: int
    bad: int
    retries: int
    decisions: int
    learned: int
    overridden_route: str


def _row(i: int, model: str, tier: str | None, *, status: int = 200, cache: str = "miss",
         escalations: int = 0) -> UsageRecord:
    return UsageRecord(f"req_{i}", "acme", "key_acme", model, status, time.time() - 30 + i,
                       route="tax" if tier == "reasoning" else "chit_chat", tier=tier,
                       deployment=None, cache=cache, escalations=escalations,
                       latency_ms=100.0)


def _learned(route: str, tier: str, prior: str) -> Decision:
    note = LearnedNote((("cheap", TierEstimate(0.2, 6.5, 9)),
                        ("reasoning", TierEstimate(0.95, 3.0, 4))), prior)
    return Decision(route, tier, Reason.LEARNED, "p_cheap 0.20", learned=note)


async def write_routing_history(app: web.Application) -> RoutingHistory:
    """Ledger rows for routed and explicit requests, and the signals of a learning gateway."""
    rows = [_row(i, "auto", "cheap") for i in range(6)]
    rows += [_row(6, "auto", "reasoning", escalations=1), _row(7, "auto", "reasoning"),
             _row(8, "auto", "reasoning")]
    rows += [_row(9, "auto", None, cache="hit"), _row(10, "auto", None, cache="hit")]
    rows += [_row(11, "auto", "cheap", status=502)]  # errors are not answers
    rows += [_row(12, "llama-3.1-8b-instant", "cheap"), _row(13, "claude-sonnet-4", "reasoning")]
    ledger = app[LEDGER_KEY]
    for row in rows:
        assert ledger.record(row)
    await ledger.flush()
    store = app[SIGNALS]
    intent = Decision("chit_chat", "cheap", Reason.CONFIDENT, "confidence 0.9 >= 0.5")
    assert store.decision("req_0", intent, "hello", None)
    assert store.decision("req_1", intent, "hi", None)
    assert store.decision("req_6", _learned("tax", "reasoning", "cheap"), "vat", None)
    assert store.decision("req_2", _learned("chit_chat", "cheap", "cheap"), "hey", None)
    assert store.escalation("req_6", intent, "cheap", "reasoning",
                            EscalationReason(EscalationKind.EMPTY, "no text"))
    for request_id, score in (("req_0", 1.0), ("req_1", 0.8), ("req_7", 0.0)):
        assert store.feedback(Answered(request_id, "acme", "cheap"), score, None)
    assert store.client_retry(Answered("req_3", "acme", "cheap"), "req_4", 0.99)
    await store.flush()
    return RoutingHistory(routed=11, cheap=6, reasoning=3, escalated=1, good=2, bad=1,
                          retries=1, decisions=4, learned=2, overridden_route="tax")
