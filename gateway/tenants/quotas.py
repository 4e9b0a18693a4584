"""Admission: rate limits, concurrency and budgets per tenant and per key.

``Admission.admit`` checks a principal's budgets, takes one concurrency slot, one request and an
estimate of the tokens (prompt counted by ``TokenCounter`` + ``max_tokens`` or a default) from
the rate limits, all or nothing, and returns a ``Reservation``; ``settle`` trues the token counts
up to the real usage and adds the cost to the spend; ``release`` gives everything back. Both are
idempotent. Over a limit it raises ``RateLimited``/``BudgetExceeded`` with ``Retry-After``.

Counters sit behind ``CounterStore`` (``gateway.tenants.counters``): one ``admit`` and one
``settle`` call per request, each atomic and all-or-nothing (one round trip on Redis). A request
larger than a token limit reserves the whole limit instead of being refused forever. In memory,
budgets are checked against spend already settled: the requests in flight can overshoot them.
With ``cost_per_token`` set (a shared store), each request also reserves its estimated tokens at
that price against its budgets until it settles, so concurrent requests overshoot a budget by
at most one request's reservation.

Admission runs on every request, so what depends only on the principal (its counter keys, which
limits apply) is worked out once per principal, in a ``_Plan``, rather than formatted each time.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core.answer import Usage
from gateway.core.chat import ChatRequest
from gateway.core.errors import BudgetExceeded, RateLimited
from gateway.tenants.auth import Principal
from gateway.tenants.counters import (
    Ask,
    BucketState,
    Budget,
    CounterStore,
    Settlement,
    Take,
    TakeResult,
    Verdict,
)
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
    lease: str
    """The id the counters hold this request's slots and reservations under."""
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
    reserved: tuple[tuple[str, str], ...] = ()
    """The budgets ``(key, period)`` holding a reservation for this request."""


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
        cost_per_token: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.cost_per_token = cost_per_token
        """US dollars per token to reserve against budgets (0: no budget reservations)."""
        self.tokens = tokens
        self.default_max_tokens = default_max_tokens
        self.soft_share = soft_share
        self.soft_action = soft_action
        self._clock = clock
        self._wall_clock = wall_clock
        self._ids = itertools.count(1)
        self._lease_prefix = secrets.token_hex(6) + "-"
        """Random per process: lease ids are unique across the replicas sharing counters."""
        self._refuse_share = soft_share if soft_action == "refuse" else 1.0
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
        prompt, reserved = self._estimate(plan, request)
        takes = plan.sized(reserved)
        rid = next(self._ids)
        budgets = self._budgets(plan, reserved) if plan.budgets else ()
        ask = Ask(f"{self._lease_prefix}{rid}", principal.tenant, budgets, self._refuse_share,
                  plan.slots, takes, self._clock())
        verdict = await self.counters.admit(ask)
        if not verdict.granted:
            raise self._refusal(plan, ask, verdict)
        share = max(verdict.shares) if verdict.shares else 0.0
        reservation = Reservation(
            id=rid,
            lease=ask.lease,
            principal=principal,
            prompt_tokens=prompt,
            reserved_tokens=reserved,
            downgrade=share >= self.soft_share and request.model == "auto",
            budget_share=share,
            requests=_tightest(verdict.take.states, plan.requests_at),
            tokens=_tightest(verdict.take.states, plan.tokens_at),
            token_takes=tuple([takes[i] for i in plan.tokens_at]),
            slots=plan.slot_keys,
            reserved=tuple([(b.key, b.period) for b in budgets if b.reserve > 0]),
        )
        self._open.add(reservation.id)
        return reservation

    def _budgets(self, plan: _Plan, reserved: int) -> tuple[Budget, ...]:
        wall = self._wall_clock()
        periods = self._periods(wall)
        reserve = reserved * self.cost_per_token
        return tuple([
            Budget(b.key, periods.day, b.budget, reserve, periods.day_end) if b.daily
            else Budget(b.key, periods.month, b.budget, reserve, periods.month_end)
            for b in plan.budgets
        ])

    def _refusal(self, plan: _Plan, ask: Ask, verdict: Verdict) -> RateLimited:
        """The error for a refused admission: over a budget, at a concurrency limit, or over a
        rate limit (with the rate-limit headers)."""
        if verdict.over_budget is not None:
            return self._over_budget(plan, verdict.shares[verdict.over_budget],
                                     plan.budgets[verdict.over_budget])
        if verdict.full_slot is not None:
            key, limit = plan.slots[verdict.full_slot]
            return RateLimited(
                f"Too many concurrent requests for {_label(key)}: limit {limit}.",
                retry_after_s=CONCURRENCY_RETRY_S,
            )
        result = verdict.take
        headers = rate_limit_headers_for(_tightest(result.states, plan.requests_at),
                                         _tightest(result.states, plan.tokens_at))
        return _rate_limited(ask.takes, plan.kinds, result, headers)

    def _over_budget(self, plan: _Plan, share: float, budget: _Budget) -> BudgetExceeded:
        wall = self._wall_clock()
        periods = self._periods(wall)
        resets_at = periods.day_end if budget.daily else periods.month_end
        return BudgetExceeded(
            f"{budget.label} has used {share:.0%} of its budget of "
            f"${budget.budget:.2f}; requests are refused until it resets.",
            retry_after_s=resets_at - wall,
        )

    async def settle(self, reservation: Reservation, usage: Usage | None, cost: float) -> None:
        """True up to the real usage (None: keep the estimate) and add ``cost`` to the spend."""
        if reservation.id not in self._open:
            return
        self._open.remove(reservation.id)
        actual = reservation.reserved_tokens if usage is None else usage.total_tokens
        refunds = [Take(t.key, t.amount - actual, t.limit, t.period_s)
                   for t in reservation.token_takes]
        periods = self._periods(self._wall_clock())
        tenant_month, key_month, tenant_day, key_day = self._plan(reservation.principal).spend_keys
        await self.counters.settle(Settlement(
            lease=reservation.lease,
            tenant=reservation.principal.tenant,
            refunds=refunds,
            spend=((tenant_month, periods.month), (key_month, periods.month),
                   (tenant_day, periods.day), (key_day, periods.day)),
            cost=max(cost, 0.0),
            slots=reservation.slots,
            reserved=reservation.reserved,
            now=self._clock(),
        ))

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
            await self.counters.add_spend(tenant, keys, cost)

    async def headers(self, principal: Principal) -> dict[str, str]:
        """The rate-limit headers for a principal without taking anything."""
        plan = self._plan(principal)
        result = await self.counters.peek(principal.tenant, plan.takes, self._clock())
        return rate_limit_headers_for(_tightest(result.states, plan.requests_at),
                                      _tightest(result.states, plan.tokens_at))

    def _estimate(self, plan: _Plan, request: ChatRequest) -> tuple[int, int]:
        if not plan.tokens_at and not (plan.budgets and self.cost_per_token):
            return 0, 0
        prompt = self.tokens.prompt_tokens(request)
        completion = (request.max_tokens or self.default_max_tokens) * request.n
        return prompt, prompt + completion


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
