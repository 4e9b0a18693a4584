"""``RedisCounterStore``: the ``CounterStore`` that replicas share, on Redis.

Each admission and each settlement is one Lua script (``gateway.tenants.redis_scripts``) run by
EVALSHA, loaded again on NOSCRIPT (redis-py's ``Script`` does both): one round trip, atomic.
Rate limits are sliding windows (at most N in any minute), concurrency slots and budget
reservations are leases that this replica renews every ``lease_s / 3`` while their request runs
(``renew_forever``, a task the tenants' cleanup context owns); a replica that dies stops renewing
and what it held expires ``lease_s`` later. Keys are ``<prefix>:{tenant}:...``, one cluster
slot per tenant.

When Redis does not answer (``RedisUnavailable`` from the link), ``fail_open`` admits on this
replica's own ``MemoryCounterStore`` (each replica then enforces the limits alone, so a fleet
can admit up to N times a limit; counted by ``on_fallback`` for the metrics), and
``fail_closed`` refuses with 503 (``ServiceUnavailable``). A request admitted locally settles
locally. A settlement that cannot reach Redis is dropped: its slots and reservations expire
with their leases, its window entries age out, and its cost is missing from the shared spend
(the ledger still has it). Touches Redis only through ``gateway.core.redis_link``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.core.errors import ServiceUnavailable
from gateway.core.redis_link import RedisLink, RedisUnavailable
from gateway.tenants import redis_scripts
from gateway.tenants.counters import (
    Ask,
    BucketState,
    MemoryCounterStore,
    Settlement,
    Take,
    TakeResult,
    Verdict,
)
from gateway.tenants.quotas import Periods

log = logging.getLogger(__name__)

MICRO = 1_000_000
"""Money crosses to Redis in micro-dollars, so its sums are exact integers."""
SPEND_KEEP_S = 86_400.0
"""How long a period's spend outlives the period (for late settlements and reports)."""
RENEW_SHARE = 1 / 3
"""Leases are renewed this often (as a share of ``lease_s``), so two renewals may fail."""


class RedisCounterStore:
    """Counters on Redis with a local fallback; see the module docstring."""

    def __init__(self, link: RedisLink, *, lease_s: float, fail_open: bool,
                 fallback: MemoryCounterStore | None = None) -> None:
        self.link = link
        self.lease_ms = round(lease_s * 1000)
        self.fail_open = fail_open
        self.local = fallback or MemoryCounterStore()
        self._admit = link.client.register_script(redis_scripts.ADMIT)
        self._settle = link.client.register_script(redis_scripts.SETTLE)
        self._renew = link.client.register_script(redis_scripts.RENEW)
        self._add_spend = link.client.register_script(redis_scripts.ADD_SPEND)
        self._held: dict[str, list[str]] = {}
        """Lease id → the keys holding it (slots, reservations), renewed while it runs."""
        self._local_leases: set[str] = set()
        self.on_fallback: Callable[[], None] | None = None

    async def load_scripts(self) -> None:
        """Load the scripts once at start, so a burst of first requests finds them there."""
        client = self.link.client
        for script in (self._admit, self._settle, self._renew, self._add_spend):
            text = script.script
            await self.link.call(lambda text=text: client.script_load(text))  # type: ignore[misc]

    # Keys ----------------------------------------------------------------------------------

    def _budget(self, tenant: str, key: str, period: str) -> tuple[str, str]:
        name = self.link.key(tenant, f"b:{key}:{period}")
        return name, f"{name}:leases"

    def _window(self, tenant: str, key: str) -> tuple[str, str]:
        name = self.link.key(tenant, f"w:{key}")
        return name, f"{name}:amounts"

    # The seam ------------------------------------------------------------------------------

    async def admit(self, ask: Ask) -> Verdict:
        keys: list[str] = []
        args: list[Any] = [ask.lease, self.lease_ms, ask.refuse_share, len(ask.budgets),
                           len(ask.slots), len(ask.takes), 1]
        for b in ask.budgets:
            keys += self._budget(ask.tenant, b.key, b.period)
            args += [_micro(b.limit), math.ceil(b.reserve * MICRO),
                     round((b.ends_at + SPEND_KEEP_S) * 1000)]
        for key, limit in ask.slots:
            keys.append(self.link.key(ask.tenant, f"c:{key}"))
            args.append(limit)
        for t in ask.takes:
            keys += self._window(ask.tenant, t.key)
            args += [round(t.amount), round(t.limit), round(t.period_s * 1000)]
        try:
            raw = await self.link.call(lambda: self._admit(keys=keys, args=args))
        except RedisUnavailable as exc:
            return await self._admit_without_redis(ask, exc)
        verdict = _verdict(raw)
        if verdict.granted:
            # The keys holding this lease: reserving budgets' lease sets, then the slots.
            nb = len(ask.budgets)
            held = [keys[2 * i + 1] for i, b in enumerate(ask.budgets) if b.reserve > 0]
            held += keys[2 * nb:2 * nb + len(ask.slots)]
            if held:
                self._held[ask.lease] = held
        return verdict

    async def _admit_without_redis(self, ask: Ask, exc: RedisUnavailable) -> Verdict:
        if not self.fail_open:
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now (the shared counter store is "
                "unavailable); retry shortly.", headers={"Retry-After": "1"},
            ) from exc
        if self.on_fallback is not None:
            self.on_fallback()
        verdict = await self.local.admit(ask)
        if verdict.granted:
            self._local_leases.add(ask.lease)
        return verdict

    async def settle(self, settlement: Settlement) -> None:
        self._held.pop(settlement.lease, None)
        if settlement.lease in self._local_leases:
            self._local_leases.discard(settlement.lease)
            await self.local.settle(settlement)
            return
        keys, args = self._settle_call(settlement)
        try:
            await self.link.call(lambda: self._settle(keys=keys, args=args))
        except RedisUnavailable as exc:
            log.info("settlement of %s dropped (%s): its leases expire", settlement.lease, exc)

    def _settle_call(self, s: Settlement) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [s.lease, _micro(s.cost), len(s.spend), len(s.reserved), len(s.slots),
                           len(s.refunds)]
        ends = _spend_expiry_ms()
        for key, period in s.spend:
            keys.append(self._budget(s.tenant, key, period)[0])
            args.append(ends)
        for key, period in s.reserved:
            keys += self._budget(s.tenant, key, period)
        keys += [self.link.key(s.tenant, f"c:{key}") for key in s.slots]
        for t in s.refunds:
            keys += self._window(s.tenant, t.key)
            args.append(round(t.amount))
        return keys, args

    async def peek(self, tenant: str, takes: Sequence[Take], now: float) -> TakeResult:
        if not takes:
            return TakeResult(True, ())
        keys: list[str] = []
        args: list[Any] = ["peek", self.lease_ms, 1.0, 0, 0, len(takes), 0]
        for t in takes:
            keys += self._window(tenant, t.key)
            args += [0, round(t.limit), round(t.period_s * 1000)]
        try:
            raw = await self.link.call(lambda: self._admit(keys=keys, args=args))
        except RedisUnavailable:
            return await self.local.peek(tenant, takes, now)
        return _verdict(raw).take

    async def get_spend(self, tenant: str, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
        names = [self._budget(tenant, key, period)[0] for key, period in keys]

        async def read() -> list[Any]:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hget(name, "spent")
                return await pipe.execute()

        return tuple([int(v or 0) / MICRO for v in await self.link.call(read)])

    async def add_spend(self, tenant: str, keys: Sequence[tuple[str, str]],
                        amount: float) -> None:
        names = [self._budget(tenant, key, period)[0] for key, period in keys]
        expiry = _spend_expiry_ms()
        await self.link.call(lambda: self._add_spend(keys=names,
                                                     args=[amount] + [expiry] * len(names)))

    async def claim_seed(self, period: str) -> bool:
        """True for the first replica to ask in ``period``: it seeds the spend from its ledger."""
        key = f"{self.link.prefix}:seeded:{period}"
        claimed = await self.link.call(
            lambda: self.link.client.set(key, "1", nx=True, ex=40 * 86_400))
        return bool(claimed)

    # Leases --------------------------------------------------------------------------------

    @property
    def held(self) -> int:
        return len(self._held)

    async def renew(self) -> None:
        """Push every lease this replica holds ``lease_s`` into the future (one round trip)."""
        if not self._held or self.link.resting:
            return
        held = list(self._held.items())

        async def push() -> None:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for lease, keys in held:
                    await self._renew(keys=keys, args=[lease, self.lease_ms], client=pipe)
                await pipe.execute()

        try:
            await self.link.call(push)
        except RedisUnavailable as exc:
            log.info("lease renewal failed (%s): will retry", exc)

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 1000 * RENEW_SHARE)
            await self.renew()


def _verdict(raw: bytes | str) -> Verdict:
    outcome, index, shares, retry_ms, states = orjson.loads(raw)
    shares_t = tuple(float(s) for s in shares) if isinstance(shares, list) else ()
    states_t = tuple(BucketState(float(lim), float(free), max(0.0, reset / 1000))
                     for lim, free, reset in (states if isinstance(states, list) else ()))
    if outcome == "budget":
        return Verdict(TakeResult(False, ()), shares_t, over_budget=int(index))
    if outcome == "slot":
        return Verdict(TakeResult(False, ()), shares_t, full_slot=int(index))
    if outcome == "take":
        return Verdict(TakeResult(False, states_t, max(0.0, retry_ms / 1000), int(index)),
                       shares_t)
    return Verdict(TakeResult(True, states_t), shares_t)


def _micro(usd: float) -> int:
    return round(usd * MICRO)


def _spend_expiry_ms() -> int:
    """When spend keys written now may go: after this month (every period ends by then)."""
    return round((Periods.of(time.time()).month_end + SPEND_KEEP_S) * 1000)
