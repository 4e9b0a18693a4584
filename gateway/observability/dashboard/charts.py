"""Small charts drawn on the server as inline SVG: bars, lines, meters and share bars.

Each function returns ``Markup`` ready to place in a template: no JavaScript, no external asset,
nothing to load. Colours come from CSS classes (``s0``, ``s1``... for series, ``ok``, ``warn``,
``danger`` for meters), so the stylesheet owns the palette; sizes come from the ``viewBox`` so a
chart scales with its container. Every text that reaches the SVG is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Format = Callable[[float], str]

WIDTH = 640
HEIGHT = 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 8, 10, 24
_MAX_TICKS = 6


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of a chart: a value per bucket (None: no data)."""

    name: str
    values: Sequence[float | None]


def _plain(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10.0 * power


def _svg(label: str, body: list[str], *, height: int = HEIGHT, width: int = WIDTH,
         css: str = "chart", stretch: bool = False) -> Markup:
    aspect = ' preserveAspectRatio="none"' if stretch else ""
    head = (f'<svg class="{css}" viewBox="0 0 {width} {height}"{aspect} role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">')
    return Markup(head + "".join(body) + "</svg>")


def _frame(top: float, fmt: Format, labels: Sequence[str]) -> list[str]:
    """Horizontal grid with y labels at 0, half and the top; x labels under evenly spaced ticks."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = ['<g class="axes">']
    for share in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - share)
        out.append(f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="y" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(fmt(top * share))}</text>")
    n = len(labels)
    every = max(1, math.ceil(n / _MAX_TICKS))
    for i in range(0, n, every):
        x = _LEFT + plot_w * (i + 0.5) / n
        out.append(f'<text class="x" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                   f"{escape(labels[i])}</text>")
    out.append("</g>")
    return out


def _empty(label: str, message: str) -> Markup:
    return _svg(label, [
        f'<rect class="empty" x="{_LEFT}" y="{_TOP}" width="{WIDTH - _LEFT - _RIGHT}" '
        f'height="{HEIGHT - _TOP - _BOTTOM}" rx="6"/>',
        f'<text class="empty-text" x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" '
        f'text-anchor="middle">{escape(message)}</text>',
    ])


def bar_chart(
    label: str,
    series: Sequence[Series],
    x_labels: Sequence[str],
    titles: Sequence[str],
    fmt: Format = _plain,
    empty: str = "No requests in this window",
) -> Markup:
    """Stacked bars, one per bucket; ``titles`` are the hover texts, one per bucket."""
    n = len(x_labels)
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(n)]
    if not n or max(totals) <= 0:
        return _empty(label, empty)
    top = nice_ceiling(max(totals))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.72)
    body = _frame(top, fmt, x_labels)
    for i in range(n):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        base = float(_TOP + plot_h)
        parts = [f"<g><title>{escape(titles[i])}</title>",
                 f'<rect class="hover" x="{_LEFT + slot * i:.1f}" y="{_TOP}" '
                 f'width="{slot:.1f}" height="{plot_h}"/>']
        for k, s in enumerate(series):
            h = plot_h * (s.values[i] or 0.0) / top
            if h <= 0:
                continue
            base -= h  # stacked upwards from the axis
            parts.append(f'<rect class="s{k}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}"/>')
        body.extend([*parts, "</g>"])
    return _svg(label, body)


def line_chart(
    label: str,
    series: Sequence[Series],
    x_labels: Sequence[str],
    fmt: Format = _plain,
    empty: str = "No requests in this window",
) -> Markup:
    """Lines through each bucket's value; a bucket without data breaks the line."""
    n = len(x_labels)
    values = [v for s in series for v in s.values if v is not None]
    if not n or not values:
        return _empty(label, empty)
    top = nice_ceiling(max(values))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    body = _frame(top, fmt, x_labels)
    for k, s in enumerate(series):
        points = [
            None if v is None else (_LEFT + plot_w * (i + 0.5) / n, _TOP + plot_h * (1 - v / top))
            for i, v in enumerate(s.values)
        ]
        body.append(f'<g class="line s{k}"><title>{escape(s.name)}</title>')
        body.append(f'<path d="{_path(points)}"/>')
        for i, p in enumerate(points):
            lonely = p is not None and (i == 0 or points[i - 1] is None) and (
                i == n - 1 or points[i + 1] is None)
            if lonely and p is not None:
                body.append(f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="2.5"/>')
        body.append("</g>")
    return _svg(label, body)


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    out: list[str] = []
    pen_down = False
    for p in points:
        if p is None:
            pen_down = False
            continue
        out.append(f"{'L' if pen_down else 'M'}{p[0]:.1f} {p[1]:.1f}")
        pen_down = True
    return " ".join(out)


def meter(share: float | None, label: str, warn_at: float = 0.8) -> Markup:
    """A thin horizontal gauge of ``share`` (0 to 1, capped), coloured by how full it is."""
    width, height = 120, 8
    if share is None:
        return _svg(label, [f'<rect class="track" width="{width}" height="{height}" rx="4"/>'],
                    height=height, width=width, css="meter", stretch=True)
    level = "danger" if share >= 1 else "warn" if share >= warn_at else "ok"
    filled = width * min(max(share, 0.0), 1.0)
    return _svg(label, [
        f'<rect class="track" width="{width}" height="{height}" rx="4"/>',
        f'<rect class="fill {level}" width="{filled:.1f}" height="{height}" rx="4"/>',
    ], height=height, width=width, css="meter", stretch=True)


def share_bar(label: str, parts: Sequence[tuple[str, float]]) -> Markup:
    """One bar split into ``parts`` (name, amount), coloured ``c0``, ``c1``... in order.

    The stylesheet rounds and clips the bar (``svg.share``), so the segments need no clip path.
    """
    width, height = 600, 14
    total = sum(max(0.0, amount) for _, amount in parts)
    body = [f'<rect class="track" width="{width}" height="{height}"/>']
    x = 0.0
    for i, (name, amount) in enumerate(parts if total > 0 else ()):
        w = width * max(0.0, amount) / total
        body.append(f'<rect class="c{i % 8}" x="{x:.1f}" width="{w:.1f}" height="{height}">'
                    f"<title>{escape(name)}: {amount / total:.0%}</title></rect>")
        x += w
    return _svg(label, body, height=height, width=width, css="share", stretch=True)
