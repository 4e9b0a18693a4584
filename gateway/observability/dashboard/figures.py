"""The overview's charts: ledger time buckets turned into inline SVG with hover texts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard.charts import Series, bar_chart, line_chart, share_bar
from gateway.observability.dashboard.queries import Bucket, Count, Window


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    svg: Markup
    legend: tuple[tuple[str, str], ...]
    """(css class, name) per series."""


def span(now: float, window: Window) -> tuple[float, float]:
    """Chart bounds aligned to whole buckets, the last one holding ``now``."""
    width = window.bucket_s
    end = math.floor(now / width) * width + width
    return end - window.seconds, end


def _x_label(window: Window) -> Callable[[float], str]:
    return fmt.day_hour if window.seconds > 86_400 else fmt.hm


def overview_charts(buckets: Sequence[Bucket], window: Window) -> list[Chart]:
    label = _x_label(window)
    xs = [label(b.start) for b in buckets]
    when = [f"{label(b.start)}–{label(b.start + window.bucket_s)} UTC" for b in buckets]
    requests = bar_chart(
        "Requests per bucket, errors stacked on top",
        [Series("ok", [b.requests - b.errors for b in buckets]),
         Series("errors", [b.errors for b in buckets])],
        xs,
        [f"{w}: {b.requests:,} requests, {b.errors:,} errors" for w, b in zip(when, buckets,
                                                                            strict=True)],
    )
    latency = line_chart(
        "Latency p50 and p95 per bucket",
        [Series("p50", [b.p50_ms for b in buckets]), Series("p95", [b.p95_ms for b in buckets])],
        xs, fmt=fmt.ms_axis,
    )
    spend = bar_chart(
        "Spend per bucket", [Series("spend", [b.cost for b in buckets])], xs,
        [f"{w}: {fmt.usd(b.cost)}" for w, b in zip(when, buckets, strict=True)], fmt=fmt.usd_axis,
    )
    cache = bar_chart(
        "Cache lookups per bucket",
        [Series("hits", [b.cache_hits for b in buckets]),
         Series("misses", [b.cache_misses for b in buckets]),
         Series("bypassed", [b.cache_bypasses for b in buckets])],
        xs,
        [f"{w}: {b.cache_hits:,} hits, {b.cache_misses:,} misses, {b.cache_bypasses:,} bypassed"
         for w, b in zip(when, buckets, strict=True)],
        empty="No cache lookups in this window",
    )
    return [
        Chart("Requests", requests, (("s0", "answered"), ("s1", "errors"))),
        Chart("Latency", latency, (("s0", "p50"), ("s1", "p95"))),
        Chart("Spend", spend, (("s0", "USD"),)),
        Chart("Cache", cache, (("s0", "hits"), ("s1", "misses"), ("s2", "bypassed"))),
    ]


@dataclass(frozen=True, slots=True)
class Mix:
    """A breakdown (routes, models): one share bar and a legend row per part."""

    bar: Markup
    rows: tuple[tuple[str, Count, float], ...]
    """(css class, count, share of requests)."""


def mix(label: str, counts: Sequence[Count], limit: int = 7) -> Mix:
    """The largest ``limit`` parts by requests, the rest summed as "other"."""
    top = list(counts[:limit])
    rest = counts[limit:]
    if rest:
        top.append(Count("other", sum(c.requests for c in rest), sum(c.errors for c in rest),
                         sum(c.cost for c in rest), sum(c.saved_cost for c in rest)))
    total = sum(c.requests for c in top) or 1
    bar = share_bar(label, [(c.label, c.requests) for c in top])
    return Mix(bar, tuple((f"c{i % 8}", c, c.requests / total) for i, c in enumerate(top)))
