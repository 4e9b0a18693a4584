"""Counters behind admission: rate limits, concurrency and spend, each admission one atomic call.

``CounterStore`` is the seam between ``gateway.tenants.quotas`` and a backend. A request is
admitted by ``admit`` and finished by ``settle``, each ONE call, all-or-nothing: a shared backend
(``gateway.tenants.redis_counters``: one Lua script per call) does each in one round trip.
``Ask`` carries what to check and hold: the budgets (with the cost to reserve), the concurrency
slots, and the takes from the rate limits; ``Verdict`` says what was granted or which limit
refused. ``Settlement`` trues the takes up to the real usage, adds the cost to the spend and lets
go of the slots and reservations. Everything a request holds is named by its lease id, so a
backend shared by replicas can let a dead replica's holdings expire.

``MemoryCounterStore`` is the single-replica default: token buckets that refill continuously
(``limit`` per ``period_s``, so ``reset`` means "back to full"), concurrency counts, and spend per
period; it checks budgets against settled spend only (``Budget.reserve`` is a shared backend's
business). It never awaits inside a call, so each call is atomic without a lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget to check: the spend of ``key`` in ``period`` against ``limit`` (US dollars)."""

    key: str
    """``t:<tenant>:day`` and the like."""
    period: str
    """The day (``2025-06-15``) or month (``2025-06``) the spend counts in."""
    limit: float
    reserve: float = 0.0
    """What to hold against the budget until the request settles (shared backends)."""
    ends_at: float = 0.0
    """When the period ends (epoch seconds): a shared backend forgets the spend after it."""


@dataclass(frozen=True, slots=True)
class Ask:
    """Everything one admission checks and holds, in the order it is checked."""

    lease: str
    """The request's id in the counters: what its slots and reservations are held under."""
    tenant: str
    budgets: Sequence[Budget]
    refuse_share: float
    """A budget at or past this share of its limit refuses the request."""
    slots: Sequence[tuple[str, int]]
    """``(key, limit)``: one concurrency slot of each."""
    takes: Sequence[Take]
    now: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """An admission's outcome: granted, or the first limit that refused it."""

    take: TakeResult
    shares: tuple[float, ...] = ()
    """Per budget, the share of it spent (and reserved)."""
    over_budget: int | None = None
    full_slot: int | None = None

    @property
    def granted(self) -> bool:
        return self.take.granted and self.over_budget is None and self.full_slot is None


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one admitted request ends: what to give back, what it cost, what to let go."""

    lease: str
    tenant: str
    refunds: Sequence[Take]
    """The token takes with ``amount`` = reserved - used (negative: used more than reserved)."""
    spend: Sequence[tuple[str, str]] = field(default_factory=tuple)
    """``(key, period)`` to add ``cost`` to (and whose reservation, if any, ends)."""
    cost: float = 0.0
    slots: Sequence[str] = field(default_factory=tuple)
    reserved: Sequence[tuple[str, str]] = field(default_factory=tuple)
    """The budgets ``(key, period)`` whose reservation for this request ends."""
    now: float = 0.0


class CounterStore(Protocol):
    """Counters shared by everything that admits requests; each call is atomic."""

    async def admit(self, ask: Ask) -> Verdict:
        """Check the budgets, hold the slots and take the takes: all of it, or nothing."""
        ...

    async def settle(self, settlement: Settlement) -> None: ...

    async def peek(self, tenant: str, takes: Sequence[Take], now: float) -> TakeResult:
        """The states of ``tenant``'s takes without taking anything (``amount`` is ignored)."""
        ...

    async def get_spend(self, tenant: str, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
        """The spend of each of ``tenant``'s ``(key, period)``; another period counts 0."""
        ...

    async def add_spend(self, tenant: str, keys: Sequence[tuple[str, str]],
                        amount: float) -> None: ...


@dataclass(slots=True)
class _Bucket:
    level: float
    stamp: float


_NOTHING = TakeResult(False, ())
"""The take result of an admission refused before its takes were tried."""


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

    async def admit(self, ask: Ask) -> Verdict:
        shares = tuple([self._share(b) for b in ask.budgets])
        if shares:
            worst = max(range(len(shares)), key=shares.__getitem__)
            if shares[worst] >= ask.refuse_share:
                return Verdict(_NOTHING, shares, over_budget=worst)
        full = self._acquire(ask.slots)
        if full is not None:
            return Verdict(_NOTHING, shares, full_slot=full)
        result = self._take(ask.takes, ask.now)
        if not result.granted:
            self._release(key for key, _ in ask.slots)
        return Verdict(result, shares)

    async def settle(self, settlement: Settlement) -> None:
        try:
            self._give(settlement.refunds, settlement.now)
            if settlement.cost > 0:
                self._add_spend(settlement.spend, settlement.cost)
        finally:
            self._release(settlement.slots)

    async def peek(self, tenant: str, takes: Sequence[Take], now: float) -> TakeResult:
        return self._take([Take(t.key, 0, t.limit, t.period_s) for t in takes], now)

    def _share(self, budget: Budget) -> float:
        spent = self._spent(budget.key, budget.period)
        return spent / budget.limit if budget.limit > 0 else 1.0

    async def take(self, takes: Sequence[Take], now: float) -> TakeResult:
        return self._take(takes, now)

    def _take(self, takes: Sequence[Take], now: float) -> TakeResult:
        buckets = [self._bucket(t, now) for t in takes]
        for t, b in zip(takes, buckets, strict=True):
            if t.amount > b.level:
                return _refused(takes, buckets)
        for t, b in zip(takes, buckets, strict=True):
            b.level -= t.amount
        return TakeResult(True, tuple([_state(t, b) for t, b in zip(takes, buckets, strict=True)]))

    async def give(self, takes: Sequence[Take], now: float) -> None:
        self._give(takes, now)

    def _give(self, takes: Sequence[Take], now: float) -> None:
        for t in takes:
            bucket = self._bucket(t, now)
            bucket.level = min(t.limit, bucket.level + t.amount)

    async def acquire_slots(self, slots: Sequence[tuple[str, int]]) -> int | None:
        return self._acquire(slots)

    def _acquire(self, slots: Sequence[tuple[str, int]]) -> int | None:
        for i, (key, limit) in enumerate(slots):
            if self._slots.get(key, 0) >= limit:
                return i
        for key, _ in slots:
            self._slots[key] = self._slots.get(key, 0) + 1
        return None

    async def release_slots(self, keys: Sequence[str]) -> None:
        self._release(keys)

    def _release(self, keys: Iterable[str]) -> None:
        for key in keys:
            held = self._slots.get(key, 0) - 1
            if held > 0:
                self._slots[key] = held
            else:
                self._slots.pop(key, None)

    async def get_spend(self, tenant: str, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
        return tuple([self._spent(key, period) for key, period in keys])

    async def add_spend(self, tenant: str, keys: Sequence[tuple[str, str]],
                        amount: float) -> None:
        self._add_spend(keys, amount)

    def _add_spend(self, keys: Sequence[tuple[str, str]], amount: float) -> None:
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
