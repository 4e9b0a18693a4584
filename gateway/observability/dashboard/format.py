"""How figures read on the dashboard: money, durations, shares, counts and times (UTC).

Pure functions, registered as Jinja filters by ``gateway.observability.dashboard.site``.
``None`` (no data) always reads as an em dash, never as zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

DASH = "—"


def usd(value: float | None) -> str:
    """Dollars: whole cents from $1 up, three significant digits below ($0.407, $0.0047)."""
    if value is None:
        return DASH
    if value == 0:
        return "$0"
    sign, v = ("-" if value < 0 else ""), abs(value)
    if v >= 1000:
        text = f"{v:,.0f}"
    elif v >= 1:
        text = f"{v:,.2f}"
    else:
        decimals = min(8, 2 - math.floor(math.log10(v)))
        whole, _, fraction = f"{v:.{decimals}f}".partition(".")
        text = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
    return f"{sign}${text}"


def usd_axis(value: float) -> str:
    """A chart axis label in dollars: $0 · $0.025 · $5."""
    return "$0" if value == 0 else f"${value:,.6g}"


def ms_axis(value: float) -> str:
    """A chart axis label from milliseconds: 0 · 250 ms · 2.5 s."""
    if value == 0:
        return "0"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:g} s"


def ms(value: float | None) -> str:
    """A duration given in milliseconds: 0.4 ms · 123 ms · 1.23 s · 75 s."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 10_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 1000:.0f} s"


def pct(value: float | None) -> str:
    """A share as a percentage: 0% · 0.4% · 12.5% · 100%."""
    if value is None:
        return DASH
    if value == 0 or value == 1:
        return f"{value:.0%}"
    return f"{value * 100:.1f}%"


def num(value: float | None) -> str:
    """A count with thousands separators."""
    return DASH if value is None else f"{value:,.0f}"


def compact(value: float | None) -> str:
    """A large count in short form: 950 · 12.3k · 4.5M."""
    if value is None:
        return DASH
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:,.0f}"


def clock(ts: float | None, now: float | None = None) -> str:
    """A time of day (UTC); the date too when it is not today."""
    if ts is None:
        return DASH
    when = datetime.fromtimestamp(ts, UTC)
    if now is not None and datetime.fromtimestamp(now, UTC).date() != when.date():
        return when.strftime("%b %d %H:%M")
    return when.strftime("%H:%M:%S")


def hm(ts: float) -> str:
    """An axis label: hours and minutes (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def day_hour(ts: float) -> str:
    """An axis label for week-long charts: weekday and hour (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%a %Hh")


def ago(seconds: float | None) -> str:
    """How long ago, from an age in seconds: 12 s · 3 min · 2 h · 4 d."""
    if seconds is None:
        return DASH
    s = max(0.0, seconds)
    if s < 5:
        return "just now"
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86_400:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86_400:.0f} d ago"


def price(per_mtok: float) -> str:
    """A price per million tokens."""
    return "free" if per_mtok == 0 else f"${per_mtok:g}"


SHORT_ID_CHARS = 20


def short_id(request_id: str) -> str:
    """A long request id as its start and its end: ids that share a prefix (a client's own,
    or one process's) still differ somewhere on the page; the whole id is in the title."""
    if len(request_id) <= SHORT_ID_CHARS:
        return request_id
    half = (SHORT_ID_CHARS - 1) // 2
    return f"{request_id[:half]}…{request_id[-half:]}"


def pairs(values: Iterable[object]) -> list[tuple[str, str]]:
    """Menu options from plain values: each value as both the option's value and its text."""
    return [(str(v), str(v)) for v in values]


FILTERS: dict[str, Callable[..., str]] = {
    "usd": usd, "ms": ms, "pct": pct, "num": num, "compact": compact, "clock": clock,
    "ago": ago, "price": price, "short_id": short_id,
}
"""Filters that print a value; ``pairs`` (menu options) is registered beside them."""
