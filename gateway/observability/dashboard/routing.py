"""The dashboard's routing page: what ``model: "auto"`` cost in reasoning-tier calls and why.

Over the chosen window: the reasoning tier's share of routed answers and the escalation rate
(from the ledger), the feedback tenants gave and the answers they asked for again, and where the
learned policy overrode the intent routes (from the signal store), with the learner's own
counts when learning is on. The signal store is read through a read-only connection of its own
(``signals_reader_context``), so a week's query never holds up the writer; without signals the
page shows the ledger's figures only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiosqlite
from aiohttp import web

from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard import routing_queries as rq
from gateway.observability.dashboard.charts import Series, bar_chart, line_chart
from gateway.observability.dashboard.figures import Chart, span
from gateway.observability.dashboard.queries import WINDOWS, Window
from gateway.observability.dashboard.state import DASHBOARD_KEY, fresh_store, render, require_login
from gateway.routing.context import ROUTER, ROUTING_CONFIG, SIGNALS
from gateway.routing.learned.context import LEARNER

SIGNALS_READER = web.AppKey("dashboard_signals_reader", aiosqlite.Connection)
DEFAULT_WINDOW = "24h"


async def signals_reader_context(app: web.Application) -> AsyncIterator[None]:
    """A read-only connection to the signal store's file, while the store runs."""
    store = app.get(SIGNALS)
    path = store.path if store is not None else None
    if path is None or not path.exists():  # no signals, or signals on PostgreSQL
        yield
        return
    db = await aiosqlite.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        await db.execute("PRAGMA busy_timeout = 5000")
        app[SIGNALS_READER] = db
        yield
    finally:
        await db.close()


@dataclass(frozen=True, slots=True)
class Totals:
    """The window's figures, summed over its buckets."""

    routed: int
    answered_by_tier: dict[str, int]
    escalated: int
    cache_hits: int
    good: int
    bad: int
    retries: int
    decisions: int
    learned: int
    overridden: int

    def share(self, tier: str) -> float | None:
        served = sum(self.answered_by_tier.values())
        return self.answered_by_tier.get(tier, 0) / served if served else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.routed if self.routed else None

    @property
    def learned_share(self) -> float | None:
        return self.learned / self.decisions if self.decisions else None


def totals(tiers: Sequence[rq.TierBucket], signals: Sequence[rq.SignalBucket]) -> Totals:
    by_tier: dict[str, int] = {}
    for b in tiers:
        for tier, count in b.tiers.items():
            by_tier[tier] = by_tier.get(tier, 0) + count
    return Totals(
        sum(b.answered for b in tiers), by_tier, sum(b.escalated for b in tiers),
        sum(b.cache_hits for b in tiers), sum(b.good for b in signals),
        sum(b.bad for b in signals), sum(b.retries for b in signals),
        sum(b.decisions for b in signals), sum(b.learned for b in signals),
        sum(b.overridden for b in signals))


def _labels(window: Window, starts: Sequence[float]) -> tuple[list[str], list[str]]:
    label = fmt.day_hour if window.seconds > 86_400 else fmt.hm
    xs = [label(s) for s in starts]
    when = [f"{label(s)}–{label(s + window.bucket_s)} UTC" for s in starts]
    return xs, when


def routing_charts(tiers: Sequence[rq.TierBucket], signals: Sequence[rq.SignalBucket],
                   order: Sequence[str], strongest: str, window: Window) -> list[Chart]:
    xs, when = _labels(window, [b.start for b in tiers])
    served = bar_chart(
        "Routed answers per bucket by tier",
        [Series(t, [b.tiers.get(t, 0) for b in tiers]) for t in order], xs,
        [f"{w}: " + ", ".join(f"{b.tiers.get(t, 0):,} {t}" for t in order)
         + f"; {fmt.pct(b.share(strongest))} {strongest}" for w, b in zip(when, tiers,
                                                                          strict=True)],
        empty="No routed requests in this window")
    rates = line_chart(
        f"{strongest} share and escalation rate per bucket",
        [Series(f"{strongest} share", [b.share(strongest) for b in tiers]),
         Series("escalation rate", [b.escalation_rate for b in tiers])],
        xs, fmt=fmt.pct, empty="No routed requests in this window")
    feedback = bar_chart(
        "Feedback and client retries per bucket",
        [Series("good", [b.good for b in signals]), Series("bad", [b.bad for b in signals]),
         Series("retried", [b.retries for b in signals])], xs,
        [f"{w}: {b.good:,} good, {b.bad:,} bad, {b.retries:,} retried"
         for w, b in zip(when, signals, strict=True)],
        empty="No feedback or retries in this window")
    return [
        Chart("Tiers", served, tuple((f"s{i}", t) for i, t in enumerate(order))),
        Chart("Rates", rates, (("s0", f"{strongest} share"), ("s1", "escalation rate"))),
        Chart("Feedback", feedback, (("s0", "good"), ("s1", "bad"), ("s2", "retried"))),
    ]


def _window(request: web.Request) -> Window:
    return WINDOWS.get(request.query.get("window", ""), WINDOWS[DEFAULT_WINDOW])


@require_login
async def routing_page(request: web.Request) -> web.StreamResponse:
    app = request.app
    store = await fresh_store(request)
    now = app[DASHBOARD_KEY].clock()
    window = _window(request)
    start, end = span(now, window)
    config, slot = app.get(ROUTING_CONFIG), app.get(ROUTER)
    aliases = config.settings.aliases if config is not None else ("auto",)
    order = slot.plan.order if slot is not None and slot.plan.order else ("cheap", "reasoning")
    strongest = order[-1]
    tiers = await rq.tier_buckets(store, aliases, start, end, window.bucket_s)
    signals, overrides, reasons = await _signal_figures(app, start, end, window)
    learner = app.get(LEARNER)
    return render(request, "routing.html", {
        "page": "routing",
        "window": window,
        "windows": WINDOWS.values(),
        "strongest": strongest,
        "totals": totals(tiers, signals),
        "charts": routing_charts(tiers, signals, order, strongest, window),
        "overrides": overrides,
        "reasons": reasons,
        "has_signals": app.get(SIGNALS_READER) is not None,
        "learning": learner.stats() if learner is not None else None,
    })


async def _signal_figures(
    app: web.Application, since: float, until: float, window: Window
) -> tuple[list[rq.SignalBucket], list[rq.Override], list[tuple[str, str, int]]]:
    db = app.get(SIGNALS_READER)
    if db is None:
        return [rq.SignalBucket(s) for s in rq.bucket_starts(since, until, window.bucket_s)], \
            [], []
    store = app.get(SIGNALS)
    if store is not None:
        await store.flush()  # the page shows what happened up to now
    return (await rq.signal_buckets(db, since, until, window.bucket_s),
            await rq.overrides(db, since, until),
            await rq.escalation_reasons(db, since, until))
