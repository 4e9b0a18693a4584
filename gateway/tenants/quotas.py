"""Admission: rate limits, concurrency and budgets per tenant and per key, all in memory.

``Admission.admit`` checks a principal's budgets, takes one concurrency slot, one request and an
estimate of the tokens (prompt counted by ``TokenCounter`` + ``max_tokens`` or a default) from
token buckets, all or nothing, and returns a ``Reservation``; ``settle`` trues the token buckets up
to the real usage and adds the cost to the spend; ``release`` gives everything back. Both are
idempotent. Over a limit it raises ``RateLimited``/``BudgetExceeded`` with ``Retry-After``.

Counters sit behind ``CounterStore`` (``gateway.tenants.counters``), whose operations are each
atomic and all-or-nothing. A request larger than a token limit reserves the whole bucket instead
of being refused forever. Budgets are checked against spend already settled: they can be
overshot by the requests in flight.

Admission runs on every request, so what depends only on the principal (its counter keys, which
limits apply) is worked out once per principal, in a ``_Plan``, rather than formatted each time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core.answer import Usage
from gateway.core.chat import ChatRequest
from gateway.core.errors import BudgetExceeded, RateLimited
from gateway.tenants.auth import Principal
from gateway.tenants.counters import BucketState, CounterStore, Take, TakeResult
from gateway.tenants.tokens import TokenCounter

CONCURRENCY_RETRY_S = 1.0
DAY_S = 86_400
MAX_PLANS = 16_384
"""Principals whose ``_Plan`` is kept; past that the cache starts again (a plan is cheap)."""


@dataclass(slots=True)
class Reservation:
    """What one admitted request holds until it is settled or released.

    Not frozen, though nothing changes a reservation once made: made per request, a frozen
    dataclass would set each field through ``object.__setattr__`` (over 1 us for these ten).
    """

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
    budget: float
    daily: bool

    @property
    def label(self) -> str:
        """For the refusal message only (built then, not for every request)."""
        return f"{_label(self.key)} ({'daily' if self.daily else 'monthly'})"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What admitting a principal's requests needs that depends only on the principal.

    Its counter keys, takes and budgets, worked out once instead of formatted per request.
    ``takes`` holds the request takes as they are taken and the token takes with amount 0 (sized
    per request by ``sized``), in the order they are checked: the first that cannot be served
    names the refusal. A plan belongs to one ``Principal`` object; ``Admission._plan`` makes a
    new one when the principal changes (the authenticator makes new ones on every reload).
    """

    principal: Principal
    takes: tuple[Take, ...]
    kinds: tuple[str, ...]
    """Per take, "requests" or "tokens"."""
    requests_at: tuple[int, ...]
    tokens_at: tuple[int, ...]
    slots: tuple[tuple[str, int], ...]
    slot_keys: tuple[str, ...]
    budgets: tuple[_Budget, ...]
    spend_keys: tuple[str, str, str, str]
    """The tenant's and the key's month, then the tenant's and the key's day."""

    @classmethod
    def of(cls, principal: Principal) -> _Plan:
        scopes = ((f"t:{principal.tenant}", principal.tenant_limits),
                  (f"k:{principal.key_id}", principal.key_limits))
        takes: list[Take] = []
        kinds: list[str] = []
        budgets: list[_Budget] = []
        for scope, limits in scopes:
            if limits.requests_per_minute:
                takes.append(Take(f"{scope}:rpm", 1, limits.requests_per_minute))
                kinds.append("requests")
            if limits.tokens_per_minute:
                takes.append(Take(f"{scope}:tpm", 0, limits.tokens_per_minute))
                kinds.append("tokens")
            if limits.daily_budget_usd is not None:
                budgets.append(_Budget(f"{scope}:day", limits.daily_budget_usd, True))
            if limits.monthly_budget_usd is not None:
                budgets.append(_Budget(f"{scope}:month", limits.monthly_budget_usd, False))
        slots = tuple((f"{s}:conc", lim.max_concurrent) for s, lim in scopes if lim.max_concurrent)
        return cls(
            principal=principal,
            takes=tuple(takes),
            kinds=tuple(kinds),
            requests_at=tuple(i for i, kind in enumerate(kinds) if kind == "requests"),
            tokens_at=tuple(i for i, kind in enumerate(kinds) if kind == "tokens"),
            slots=slots,
            slot_keys=tuple(key for key, _ in slots),
            budgets=tuple(budgets),
            spend_keys=_spend_keys(principal.tenant, principal.key_id),
        )

    def sized(self, reserved: int) -> Sequence[Take]:
        """The takes for a request reserving ``reserved`` tokens (at most each token limit)."""
        if not self.tokens_at:
            return self.takes
        takes = list(self.takes)
        for i in self.tokens_at:
            limit = takes[i].limit
            takes[i] = Take(takes[i].key, min(reserved, limit), limit)
        return takes


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
        self._plans: dict[str, _Plan] = {}

    def _periods(self, wall: float) -> Periods:
        """The periods of ``wall``, cached for the current day (strftime is slow)."""
        today = self._today
        if today.day_end - DAY_S <= wall < today.day_end:
            return today
        periods = Periods.of(wall)
        if wall >= today.day_end:  # a new day: keep it; an older moment: don't
            self._today = periods
        return periods

    def _plan(self, principal: Principal) -> _Plan:
        """The principal's plan, by key id; remade when the principal (or its limits) changed."""
        plan = self._plans.get(principal.key_id)
        if plan is not None and (plan.principal is principal or plan.principal == principal):
            return plan
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        plan = self._plans[principal.key_id] = _Plan.of(principal)
        return plan

    @property
    def in_flight(self) -> int:
        return len(self._open)

    async def admit(self, principal: Principal, request: ChatRequest) -> Reservation:
        """Reserve capacity for ``request`` or raise ``RateLimited``/``BudgetExceeded``."""
        plan = self._plan(principal)
        share = await self._budget_share(plan, self._wall_clock()) if plan.budgets else 0.0
        prompt, reserved = self._estimate(plan, request)
        slots = plan.slots
        if slots and (full := await self.counters.acquire_slots(slots)) is not None:
            raise RateLimited(
                f"Too many concurrent requests for {_label(slots[full][0])}: "
                f"limit {slots[full][1]}.",
                retry_after_s=CONCURRENCY_RETRY_S,
            )
        try:
            takes = plan.sized(reserved)
            result = await self.counters.take(takes, self._clock())
        except BaseException:
            await self.counters.release_slots(plan.slot_keys)
            raise
        requests = _tightest(result.states, plan.requests_at)
        tokens = _tightest(result.states, plan.tokens_at)
        if not result.granted:
            await self.counters.release_slots(plan.slot_keys)
            raise _rate_limited(takes, plan.kinds, result, rate_limit_headers_for(requests, tokens))
        reservation = Reservation(
            id=next(self._ids),
            principal=principal,
            prompt_tokens=prompt,
            reserved_tokens=reserved,
            downgrade=share >= self.soft_share and request.model == "auto",
            budget_share=share,
            requests=requests,
            tokens=tokens,
            token_takes=tuple([takes[i] for i in plan.tokens_at]),
            slots=plan.slot_keys,
        )
        self._open.add(reservation.id)
        return reservation

    async def settle(self, reservation: Reservation, usage: Usage | None, cost: float) -> None:
        """True up to the real usage (None: keep the estimate) and add ``cost`` to the spend."""
        if reservation.id not in self._open:
            return
        self._open.remove(reservation.id)
        try:
            actual = reservation.reserved_tokens if usage is None else usage.total_tokens
            if reservation.token_takes:
                refunds = [Take(t.key, t.amount - actual, t.limit, t.period_s)
                           for t in reservation.token_takes]
                await self.counters.give(refunds, self._clock())
            if cost > 0:
                await self._add_spend_now(self._plan(reservation.principal), cost)
        finally:
            if reservation.slots:
                await self.counters.release_slots(reservation.slots)

    async def release(self, reservation: Reservation) -> None:
        """Give back everything: the request used nothing (no answer, nothing billed)."""
        await self.settle(reservation, Usage(0, 0), 0.0)

    async def add_spend(self, tenant: str, key_id: str, cost: float, when: float) -> None:
        """Count ``cost`` spent at ``when`` towards the day's and month's budgets it falls in."""
        now, at = self._periods(self._wall_clock()), self._periods(when)
        tenant_month, key_month, tenant_day, key_day = _spend_keys(tenant, key_id)
        keys = []
        if at.month == now.month:
            keys += [(tenant_month, at.month), (key_month, at.month)]
        if at.day == now.day:
            keys += [(tenant_day, at.day), (key_day, at.day)]
        if keys:
            await self.counters.add_spend(keys, cost)

    async def _add_spend_now(self, plan: _Plan, cost: float) -> None:
        """``add_spend`` for this moment, which falls in this day and month by definition."""
        periods = self._periods(self._wall_clock())
        tenant_month, key_month, tenant_day, key_day = plan.spend_keys
        await self.counters.add_spend(
            [(tenant_month, periods.month), (key_month, periods.month),
             (tenant_day, periods.day), (key_day, periods.day)],
            cost,
        )

    async def headers(self, principal: Principal) -> dict[str, str]:
        """The rate-limit headers for a principal without taking anything."""
        plan = self._plan(principal)
        result = await self.counters.take([Take(t.key, 0, t.limit) for t in plan.takes],
                                          self._clock())
        return rate_limit_headers_for(_tightest(result.states, plan.requests_at),
                                      _tightest(result.states, plan.tokens_at))

    def _estimate(self, plan: _Plan, request: ChatRequest) -> tuple[int, int]:
        if not plan.tokens_at:
            return 0, 0
        prompt = self.tokens.prompt_tokens(request)
        completion = (request.max_tokens or self.default_max_tokens) * request.n
        return prompt, prompt + completion

    async def _budget_share(self, plan: _Plan, wall: float) -> float:
        periods = self._periods(wall)
        budgets = plan.budgets
        spent = await self.counters.get_spend(
            [(b.key, periods.day if b.daily else periods.month) for b in budgets]
        )
        shares = [s / b.budget if b.budget > 0 else 1.0
                  for s, b in zip(spent, budgets, strict=True)]
        worst = max(range(len(budgets)), key=shares.__getitem__)
        share, budget = shares[worst], budgets[worst]
        refuse = share >= 1.0 or (share >= self.soft_share and self.soft_action == "refuse")
        if refuse:
            resets_at = periods.day_end if budget.daily else periods.month_end
            raise BudgetExceeded(
                f"{budget.label} has used {share:.0%} of its budget of "
                f"${budget.budget:.2f}; requests are refused until it resets.",
                retry_after_s=resets_at - wall,
            )
        return share


def _spend_keys(tenant: str, key_id: str) -> tuple[str, str, str, str]:
    """The tenant's and the key's month, then the tenant's and the key's day."""
    return (f"t:{tenant}:month", f"k:{key_id}:month", f"t:{tenant}:day", f"k:{key_id}:day")


def _label(key: str) -> str:
    kind, _, rest = key.partition(":")
    name = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return f"tenant '{name}'" if kind == "t" else f"key '{name}'"


def _tightest(states: Sequence[BucketState], at: Sequence[int]) -> BucketState | None:
    """Of the states at ``at``, the one with the least remaining: what the client should pace
    itself by (the first of equals)."""
    best = None
    for i in at:
        if best is None or states[i].remaining < best.remaining:
            best = states[i]
    return best


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


_REQUEST_HEADERS = (
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"
)
_TOKEN_HEADERS = (
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"
)


def rate_limit_headers_for(
    requests: BucketState | None, tokens: BucketState | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if requests is not None:
        _describe(headers, _REQUEST_HEADERS, requests)
    if tokens is not None:
        _describe(headers, _TOKEN_HEADERS, tokens)
    return headers


def _describe(headers: dict[str, str], names: tuple[str, str, str], state: BucketState) -> None:
    limit, remaining, reset = names
    headers[limit] = str(int(state.limit))
    headers[remaining] = str(max(0, int(state.remaining)))
    headers[reset] = format_reset(state.reset_s)


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
