"""Where a request's time went, rendered as a ``Server-Timing`` header."""

from __future__ import annotations

import time


class Timing:
    """Stages measured from the request's start; ``upstream`` is kept apart from ``gw``."""

    __slots__ = ("_last", "stages", "started")

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.stages: list[tuple[str, float]] = []

    def mark(self, stage: str) -> None:
        """Close a gateway stage that ran since the previous mark."""
        now = time.perf_counter()
        self.stages.append((stage, (now - self._last) * 1000))
        self._last = now

    def add(self, stage: str, ms: float) -> None:
        """Record a stage measured elsewhere (the upstream call) and move past it."""
        self.stages.append((stage, ms))
        self._last = time.perf_counter()

    def total(self, stage: str) -> float:
        """Milliseconds recorded under ``stage`` (summed: a request may call upstream twice)."""
        return sum(ms for name, ms in self.stages if name == stage)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def header(self) -> str:
        gateway_ms = self.elapsed_ms()
        parts = []
        for name, ms in self.stages:
            parts.append(f"{name};dur={ms:.2f}")
            if name == "upstream":
                gateway_ms -= ms
        parts.append(f"gw;dur={gateway_ms:.2f}")
        return ", ".join(parts)
