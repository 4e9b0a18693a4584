"""Admission: rate limits, concurrency and budgets per tenant and per key, all in memory.

``Admission.admit`` checks a principal's budgets, takes one concurrency slot, one request and an
estimate of the tokens (prompt counted by ``TokenCounter`` + ``max_tokens`` or a default) from
token buckets, all or nothing, and returns a ``Reservation``; ``settle`` trues the token buckets up
to the real usage and adds the cost to the spend; ``release`` gives everything back. Both are
idempotent. Over a limit it raises ``RateLimited``/``BudgetExceeded`` with ``Retry-After``.

Counters sit behind ``CounterStore``, whose operations are each atomic and all-or-nothing, so a
Redis implementation (one Lua script per call) can replace ``MemoryCounterStore`` without touching
callers. Buckets refill continuously (``limit`` per minute), so ``reset`` means "back to full".
A request larger than a token limit reserves the whole bucket instead of being refused forever.
Budgets are checked against spend already settled: they can be overshot by the requests in flight.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.chat import ChatRequest
from gateway.errors import BudgetExceeded, RateLimited
from gateway.providers.base import Usage
from gateway.tenants.auth import Principal
from gateway.tenants.settings import Limits
from gateway.tenants.tokens import TokenCounter

PERIOD_S = 60.0
CONCURRENCY_RETRY_S = 1.0
DAY_S = 86_400


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
        bucket = self._buckets.get(take.key)
        if bucket is None:
            bucket = self._buckets[take.key] = _Bucket(take.limit, now)
        elapsed = max(0.0, now - bucket.stamp)
        bucket.level = min(take.limit, bucket.level + elapsed * take.limit / take.period_s)
        bucket.stamp = max(now, bucket.stamp)
        return bucket

    async def take(self, takes: Sequence[Take], now: float) -> TakeResult:
        buckets = [self._bucket(t, now) for t in takes]
        waits = [
            (t.amount - b.level) * t.period_s / t.limit if t.amount > b.level else 0.0
            for t, b in zip(takes, buckets, strict=True)
        ]
        wait = max(waits, default=0.0)
        if wait > 0:
            states = tuple(_state(t, b) for t, b in zip(takes, buckets, strict=True))
            return TakeResult(False, states, wait, next(i for i, w in enumerate(waits) if w > 0))
        for t, b in zip(takes, buckets, strict=True):
            b.level -= t.amount
        return TakeResult(True, tuple(_state(t, b) for t, b in zip(takes, buckets, strict=True)))

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
        return tuple(_in_period(self._spend.get(key), period) for key, period in keys)

    async def add_spend(self, keys: Sequence[tuple[str, str]], amount: float) -> None:
        for key, period in keys:
            self._spend[key] = (period, _in_period(self._spend.get(key), period) + amount)


def _state(take: Take, bucket: _Bucket) -> BucketState:
    reset_s = max(0.0, (take.limit - bucket.level) * take.period_s / take.limit)
    return BucketState(take.limit, bucket.level, reset_s)


def _in_period(entry: tuple[str, float] | None, period: str) -> float:
    return entry[1] if entry is not None and entry[0] == period else 0.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it is settled or released."""

    id: int
    principal: Principal
    prompt_tokens: int
    reserved_tokens: int
    downgrade: bool
    """Past the budget's soft share (policy "downgrade"): route ``auto`` to the cheap tier."""
    budget_share: float
    requests: BucketState | None
    tokens: BucketState | None
    token_takes: tuple[Take, ...]
    slots: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month a moment falls in, and when each ends (epoch seconds)."""

    day: str
    month: str
    day_end: float
    month_end: float

    @classmethod
    def of(cls, wall: float) -> Periods:
        now = datetime.fromtimestamp(wall, UTC)
        day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return cls(
            day=day_start.strftime("%Y-%m-%d"),
            month=day_start.strftime("%Y-%m"),
            day_end=(day_start + timedelta(days=1)).timestamp(),
            month_end=datetime(year, month, 1, tzinfo=UTC).timestamp(),
        )


@dataclass(frozen=True, slots=True)
class _Budget:
    key: str
    """``t:<tenant>:day`` and the like."""
    period: str
    budget: float
    resets_in_s: float

    @property
    def label(self) -> str:
        """For the refusal message only (built then, not for every request)."""
        daily = self.key.endswith(":day")
        return f"{_label(self.key)} ({'daily' if daily else 'monthly'})"


class Admission:
    """Admits, settles and releases requests against the counters in a ``CounterStore``."""

    def __init__(
        self,
        counters: CounterStore,
        tokens: TokenCounter,
        *,
        default_max_tokens: int = 1024,
        soft_share: float = 0.9,
        soft_action: str = "downgrade",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.tokens = tokens
        self.default_max_tokens = default_max_tokens
        self.soft_share = soft_share
        self.soft_action = soft_action
        self._clock = clock
        self._wall_clock = wall_clock
        self._ids = itertools.count(1)
        self._open: set[int] = set()
        self._today = Periods.of(wall_clock())

    def _periods(self, wall: float) -> Periods:
        """The periods of ``wall``, cached for the current day (strftime is slow)."""
        today = self._today
        if today.day_end - DAY_S <= wall < today.day_end:
            return today
        periods = Periods.of(wall)
        if wall >= today.day_end:  # a new day: keep it; an older moment: don't
            self._today = periods
        return periods

    @property
    def in_flight(self) -> int:
        return len(self._open)

    async def admit(self, principal: Principal, request: ChatRequest) -> Reservation:
        """Reserve capacity for ``request`` or raise ``RateLimited``/``BudgetExceeded``."""
        scopes = _scopes(principal)
        share = await self._budget_share(scopes, self._wall_clock())
        prompt, reserved = self._estimate(scopes, request)
        slots = tuple((f"{s}:conc", lim.max_concurrent) for s, lim in scopes if lim.max_concurrent)
        if slots and (full := await self.counters.acquire_slots(slots)) is not None:
            raise RateLimited(
                f"Too many concurrent requests for {_label(slots[full][0])}: "
                f"limit {slots[full][1]}.",
                retry_after_s=CONCURRENCY_RETRY_S,
            )
        slot_keys = tuple(key for key, _ in slots)
        try:
            takes, kinds = _takes(scopes, reserved)
            result = await self.counters.take(takes, self._clock())
        except BaseException:
            await self.counters.release_slots(slot_keys)
            raise
        requests, tokens = _tightest(result.states, kinds)
        if not result.granted:
            await self.counters.release_slots(slot_keys)
            raise _rate_limited(takes, kinds, result, rate_limit_headers_for(requests, tokens))
        reservation = Reservation(
            id=next(self._ids),
            principal=principal,
            prompt_tokens=prompt,
            reserved_tokens=reserved,
            downgrade=share >= self.soft_share and request.model == "auto",
            budget_share=share,
            requests=requests,
            tokens=tokens,
            token_takes=tuple(t for t, kind in zip(takes, kinds, strict=True) if kind == "tokens"),
            slots=slot_keys,
        )
        self._open.add(reservation.id)
        return reservation

    async def settle(self, reservation: Reservation, usage: Usage | None, cost: float) -> None:
        """True up to the real usage (None: keep the estimate) and add ``cost`` to the spend."""
        if reservation.id not in self._open:
            return
        self._open.discard(reservation.id)
        try:
            actual = reservation.reserved_tokens if usage is None else usage.total_tokens
            if reservation.token_takes:
                refunds = [Take(t.key, t.amount - actual, t.limit, t.period_s)
                           for t in reservation.token_takes]
                await self.counters.give(refunds, self._clock())
            if cost > 0:
                p = reservation.principal
                await self.add_spend(p.tenant, p.key_id, cost, self._wall_clock())
        finally:
            if reservation.slots:
                await self.counters.release_slots(reservation.slots)

    async def release(self, reservation: Reservation) -> None:
        """Give back everything: the request used nothing (no answer, nothing billed)."""
        await self.settle(reservation, Usage(0, 0), 0.0)

    async def add_spend(self, tenant: str, key_id: str, cost: float, when: float) -> None:
        """Count ``cost`` spent at ``when`` towards the day's and month's budgets it falls in."""
        now, at = self._periods(self._wall_clock()), self._periods(when)
        keys = []
        if at.month == now.month:
            keys += [(f"t:{tenant}:month", at.month), (f"k:{key_id}:month", at.month)]
        if at.day == now.day:
            keys += [(f"t:{tenant}:day", at.day), (f"k:{key_id}:day", at.day)]
        if keys:
            await self.counters.add_spend(keys, cost)

    async def headers(self, principal: Principal) -> dict[str, str]:
        """The rate-limit headers for a principal without taking anything."""
        takes, kinds = _takes(_scopes(principal), 0)
        result = await self.counters.take([Take(t.key, 0, t.limit) for t in takes], self._clock())
        return rate_limit_headers_for(*_tightest(result.states, kinds))

    def _estimate(self, scopes: Sequence[tuple[str, Limits]], request: ChatRequest) -> tuple[
        int, int
    ]:
        if not any(limits.tokens_per_minute for _, limits in scopes):
            return 0, 0
        prompt = self.tokens.prompt_tokens(request)
        completion = (request.max_tokens or self.default_max_tokens) * request.n
        return prompt, prompt + completion

    async def _budget_share(
        self, scopes: Sequence[tuple[str, Limits]], wall: float
    ) -> float:
        budgets = _budgets(scopes, wall, self._periods(wall))
        if not budgets:
            return 0.0
        spent = await self.counters.get_spend([(b.key, b.period) for b in budgets])
        shares = [s / b.budget if b.budget > 0 else 1.0
                  for s, b in zip(spent, budgets, strict=True)]
        worst = max(range(len(budgets)), key=shares.__getitem__)
        share, budget = shares[worst], budgets[worst]
        refuse = share >= 1.0 or (share >= self.soft_share and self.soft_action == "refuse")
        if refuse:
            raise BudgetExceeded(
                f"{budget.label} has used {share:.0%} of its budget of "
                f"${budget.budget:.2f}; requests are refused until it resets.",
                retry_after_s=budget.resets_in_s,
            )
        return share


def _scopes(principal: Principal) -> tuple[tuple[str, Limits], ...]:
    return ((f"t:{principal.tenant}", principal.tenant_limits),
            (f"k:{principal.key_id}", principal.key_limits))


def _takes(scopes: Sequence[tuple[str, Limits]], reserved: int) -> tuple[list[Take], list[str]]:
    takes, kinds = [], []
    for scope, limits in scopes:
        if limits.requests_per_minute:
            takes.append(Take(f"{scope}:rpm", 1, limits.requests_per_minute))
            kinds.append("requests")
        if limits.tokens_per_minute:
            limit = limits.tokens_per_minute
            takes.append(Take(f"{scope}:tpm", min(reserved, limit), limit))
            kinds.append("tokens")
    return takes, kinds


def _budgets(
    scopes: Sequence[tuple[str, Limits]], wall: float, periods: Periods
) -> list[_Budget]:
    out = []
    for scope, limits in scopes:
        if limits.daily_budget_usd is not None:
            out.append(_Budget(f"{scope}:day", periods.day, limits.daily_budget_usd,
                               periods.day_end - wall))
        if limits.monthly_budget_usd is not None:
            out.append(_Budget(f"{scope}:month", periods.month, limits.monthly_budget_usd,
                               periods.month_end - wall))
    return out


def _label(key: str) -> str:
    kind, _, rest = key.partition(":")
    name = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return f"tenant '{name}'" if kind == "t" else f"key '{name}'"


def _tightest(
    states: Sequence[BucketState], kinds: Sequence[str]
) -> tuple[BucketState | None, BucketState | None]:
    """Per kind, the state with the least remaining: what the client should pace itself by."""
    best: dict[str, BucketState] = {}
    for state, kind in zip(states, kinds, strict=True):
        if kind not in best or state.remaining < best[kind].remaining:
            best[kind] = state
    return best.get("requests"), best.get("tokens")


def _rate_limited(
    takes: Sequence[Take], kinds: Sequence[str], result: TakeResult, headers: dict[str, str]
) -> RateLimited:
    failed = result.failed or 0
    take = takes[failed]
    unit = "requests" if kinds[failed] == "requests" else "tokens"
    return RateLimited(
        f"Rate limit reached for {_label(take.key)} on {unit} per minute: limit "
        f"{take.limit:.0f}, requested {take.amount:.0f}. Retry after "
        f"{result.retry_after_s:.1f} s.",
        retry_after_s=result.retry_after_s,
        headers=headers,
    )


def rate_limit_headers(reservation: Reservation) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for an admitted request (none for unlimited kinds)."""
    return rate_limit_headers_for(reservation.requests, reservation.tokens)


def rate_limit_headers_for(
    requests: BucketState | None, tokens: BucketState | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(int(state.limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(state.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(state.reset_s)
    return headers


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
