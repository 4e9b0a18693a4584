"""Counters behind admission: token buckets, concurrency slots and spend, each call atomic.

``CounterStore`` is the seam: every operation is all-or-nothing, so a Redis implementation (one
Lua script per call) can replace ``MemoryCounterStore`` without touching ``gateway.tenants.quotas``.
Buckets refill continuously (``limit`` per ``period_s``), so ``reset`` means "back to full".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

PERIOD_S = 60.0


@dataclass(frozen=True, slots=True)
class Take:
    """Take ``amount`` from the bucket ``key`` holding up to ``limit``, refilled per ``period_s``.

    A negative amount (in ``CounterStore.give``) charges the bucket instead.
    """

    key: str
    amount: float
    limit: float
    period_s: float = PERIOD_S


@dataclass(frozen=True, slots=True)
class BucketState:
    limit: float
    remaining: float
    reset_s: float


@dataclass(frozen=True, slots=True)
class TakeResult:
    granted: bool
    states: tuple[BucketState, ...]
    retry_after_s: float = 0.0
    failed: int | None = None


class CounterStore(Protocol):
    """Counters shared by everything that admits requests; each call is atomic."""

    async def take(self, takes: Sequence[Take], now: float) -> TakeResult:
        """Take every amount or none; the states are after the take (or as they are)."""
        ...

    async def give(self, takes: Sequence[Take], now: float) -> None:
        """Add each amount back (capped at the limit; negative amounts charge)."""
        ...

    async def acquire_slots(self, slots: Sequence[tuple[str, int]]) -> int | None:
        """Hold one slot of each ``(key, limit)``, all or none; the index of a full one, or None."""
        ...

    async def release_slots(self, keys: Sequence[str]) -> None: ...

    async def get_spend(self, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
        """The spend of each ``(key, period)``; a period other than the stored one counts 0."""
        ...

    async def add_spend(self, keys: Sequence[tuple[str, str]], amount: float) -> None: ...


@dataclass(slots=True)
class _Bucket:
    level: float
    stamp: float


class MemoryCounterStore:
    """The single-node ``CounterStore``: dicts, no locks needed (no await inside a call)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._slots: dict[str, int] = {}
        self._spend: dict[str, tuple[str, float]] = {}

    def _bucket(self, take: Take, now: float) -> _Bucket:
        """The bucket of ``take``, refilled up to ``now`` (a new one starts full)."""
        bucket = self._buckets.get(take.key)
        if bucket is None:
            bucket = self._buckets[take.key] = _Bucket(take.limit, now)
        elapsed = now - bucket.stamp
        if elapsed > 0:
            bucket.level += elapsed * take.limit / take.period_s
            bucket.stamp = now
        if bucket.level > take.limit:  # full, or the limit was lowered since
            bucket.level = take.limit
        return bucket

    async def take(self, takes: Sequence[Take], now: float) -> TakeResult:
        buckets = [self._bucket(t, now) for t in takes]
        for t, b in zip(takes, buckets, strict=True):
            if t.amount > b.level:
                return _refused(takes, buckets)
        for t, b in zip(takes, buckets, strict=True):
            b.level -= t.amount
        return TakeResult(True, tuple([_state(t, b) for t, b in zip(takes, buckets, strict=True)]))

    async def give(self, takes: Sequence[Take], now: float) -> None:
        for t in takes:
            bucket = self._bucket(t, now)
            bucket.level = min(t.limit, bucket.level + t.amount)

    async def acquire_slots(self, slots: Sequence[tuple[str, int]]) -> int | None:
        for i, (key, limit) in enumerate(slots):
            if self._slots.get(key, 0) >= limit:
                return i
        for key, _ in slots:
            self._slots[key] = self._slots.get(key, 0) + 1
        return None

    async def release_slots(self, keys: Sequence[str]) -> None:
        for key in keys:
            held = self._slots.get(key, 0) - 1
            if held > 0:
                self._slots[key] = held
            else:
                self._slots.pop(key, None)

    async def get_spend(self, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
        return tuple([self._spent(key, period) for key, period in keys])

    async def add_spend(self, keys: Sequence[tuple[str, str]], amount: float) -> None:
        for key, period in keys:
            self._spend[key] = (period, self._spent(key, period) + amount)

    def _spent(self, key: str, period: str) -> float:
        entry = self._spend.get(key)
        return entry[1] if entry is not None and entry[0] == period else 0.0


def _state(take: Take, bucket: _Bucket) -> BucketState:
    reset_s = max(0.0, (take.limit - bucket.level) * take.period_s / take.limit)
    return BucketState(take.limit, bucket.level, reset_s)


def _refused(takes: Sequence[Take], buckets: Sequence[_Bucket]) -> TakeResult:
    """A refusal, taking nothing: the longest wait, and the first take that has to wait."""
    waits = [
        (t.amount - b.level) * t.period_s / t.limit if t.amount > b.level else 0.0
        for t, b in zip(takes, buckets, strict=True)
    ]
    states = tuple(_state(t, b) for t, b in zip(takes, buckets, strict=True))
    return TakeResult(False, states, max(waits), next(i for i, w in enumerate(waits) if w > 0))
