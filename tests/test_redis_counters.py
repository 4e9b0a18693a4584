"""Tests for gateway/tenants/redis_counters.py and its scripts, on a real redis-server."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.core.answer import Usage
from gateway.core.cluster import ClusterSettings
from gateway.core.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from gateway.core.redis_link import RedisLink
from gateway.core.tenant_settings import Limits
from gateway.tenants.auth import Principal
from gateway.tenants.quotas import Admission, Reservation
from gateway.tenants.redis_counters import RedisCounterStore
from gateway.tenants.tokens import TokenCounter
from tests.redis_server import RedisServer
from tests.tasks import until as until_within
from tests.tenant_fixtures import chat, principal

WAIT_S = 10.0
until = functools.partial(until_within, timeout_s=WAIT_S)


@asynccontextmanager
async def replica(url: str, *, lease_s: float = 30.0, fail_open: bool = True,
                  timeout_ms: float = 10_000.0, retry_s: float = 0.05,
                  **options: Any) -> AsyncIterator[Admission]:
    """One replica's admission over Redis at ``url``."""
    link = RedisLink(ClusterSettings(redis_url=url, redis_retry_interval_s=retry_s,
                                     redis_timeout_ms=timeout_ms,
                                     redis_connect_timeout_ms=timeout_ms,
                                     redis_mode="fail_open" if fail_open else "fail_closed"))
    store = RedisCounterStore(link, lease_s=lease_s, fail_open=fail_open)
    try:
        yield Admission(store, TokenCounter(None), **options)
    finally:
        await link.close()


def store_of(adm: Admission) -> RedisCounterStore:
    assert isinstance(adm.counters, RedisCounterStore)
    return adm.counters


async def admit_all(adms: list[Admission], who: Principal, count: int,
                    **chat_options: Any) -> tuple[list[Reservation], list[RateLimited]]:
    """``count`` concurrent admissions spread round-robin over ``adms``."""
    results = await asyncio.gather(
        *(adms[i % len(adms)].admit(who, chat(**chat_options)) for i in range(count)),
        return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) + len(refused) == count, [r for r in results if
                                                   isinstance(r, BaseException)][:1]
    return admitted, refused


async def test_300_admissions_over_three_replicas_against_50_per_minute_admit_exactly_50(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as a, replica(redis_server.url) as b, \
            replica(redis_server.url) as c:
        who = principal(tenant_limits=Limits(requests_per_minute=50))
        admitted, refused = await admit_all([a, b, c], who, 300)
        assert len(admitted) == 50
        assert len(refused) == 250
        retry_after = {int(e.headers["Retry-After"]) for e in refused}
        assert min(retry_after) >= 1 and max(retry_after) <= 60
        assert refused[0].headers["x-ratelimit-remaining-requests"] == "0"


async def test_the_window_slides_instead_of_resetting_at_a_fixed_edge(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as adm:
        who = principal(tenant_limits=Limits(requests_per_minute=3))
        await admit_all([adm], who, 3)
        link = store_of(adm).link
        window = link.key("acme", "w:t:acme:rpm")
        # Age the first admission by 59.9 s: it leaves the window a tenth of a second later.
        first = (await link.client.zrange(window, 0, 0, withscores=True))[0]
        await link.client.zadd(window, {first[0]: first[1] - 59_900})
        with pytest.raises(RateLimited) as refused:
            await adm.admit(who, chat())
        assert refused.value.retry_after_s < 1.0
        await until(lambda: _admits(adm, who), "the oldest admission to leave the window")
        with pytest.raises(RateLimited):  # only one left the window: one came back
            await adm.admit(who, chat())


async def _admits(adm: Admission, who: Principal) -> bool:
    try:
        await adm.admit(who, chat())
    except RateLimited:
        return False
    return True


async def test_tokens_are_trued_up_at_settle_and_shared_by_replicas(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as a, replica(redis_server.url) as b:
        who = principal(tenant_limits=Limits(tokens_per_minute=1000))
        first = await a.admit(who, chat("hi", max_tokens=400))
        assert first.tokens is not None
        assert first.tokens.remaining == 1000 - first.reserved_tokens
        await a.settle(first, Usage(10, 20), 0.0)
        second = await b.admit(who, chat("hi", max_tokens=400))
        assert second.tokens is not None
        assert second.tokens.remaining == 1000 - 30 - second.reserved_tokens
        headers = await a.headers(who)
        assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 30 - second.reserved_tokens)
        await b.release(second)
        assert (await a.headers(who))["x-ratelimit-remaining-tokens"] == str(1000 - 30)


async def test_concurrency_slots_are_shared_and_given_back(redis_server: RedisServer) -> None:
    async with replica(redis_server.url) as a, replica(redis_server.url) as b:
        who = principal(tenant_limits=Limits(max_concurrent=2))
        held = [await a.admit(who, chat()), await b.admit(who, chat())]
        with pytest.raises(RateLimited, match="concurrent requests for tenant 'acme'"):
            await a.admit(who, chat())
        await b.release(held[1])
        await a.admit(who, chat())


async def test_a_dead_replicas_slots_expire_with_their_leases(redis_server: RedisServer) -> None:
    who = principal(tenant_limits=Limits(max_concurrent=1))
    async with replica(redis_server.url, lease_s=0.3) as dying:
        await dying.admit(who, chat())  # never settled, never renewed: the replica "died"
    async with replica(redis_server.url) as survivor:
        with pytest.raises(RateLimited, match="concurrent"):
            await survivor.admit(who, chat())
        await until(lambda: _admits(survivor, who), "the dead replica's lease to expire")


async def test_renewal_keeps_a_running_requests_lease_alive(redis_server: RedisServer) -> None:
    async with replica(redis_server.url, lease_s=30.0) as adm:
        who = principal(tenant_limits=Limits(max_concurrent=1))
        await adm.admit(who, chat())
        store = store_of(adm)
        slots = store.link.key("acme", "c:t:acme:conc")
        lease, expiry = (await store.link.client.zrange(slots, 0, 0, withscores=True))[0]
        await store.link.client.zadd(slots, {lease: expiry - 29_000})  # about to expire
        await store.renew()
        renewed = await store.link.client.zscore(slots, lease)
        assert renewed > expiry - 1_000


async def test_budget_reservations_stop_concurrent_requests_overspending(
    redis_server: RedisServer,
) -> None:
    price = 0.3 / 130  # a request of "Hello there" with max_tokens=100 reserves about $0.30
    async with replica(redis_server.url, cost_per_token=price) as a, \
            replica(redis_server.url, cost_per_token=price) as b:
        who = principal(tenant_limits=Limits(daily_budget_usd=1.0))
        admitted, refused = await admit_all([a, b], who, 40)
        reserve = admitted[0].reserved_tokens * price
        assert len(admitted) == 1 + int(1.0 // reserve)  # the last may cross: one reservation
        assert all(isinstance(e, BudgetExceeded) for e in refused)
        for r in admitted:  # settle ignores a reservation it did not make: ask both
            for adm in (a, b):
                await adm.settle(r, Usage(r.reserved_tokens, 0), reserve)
        spent = await store_of(a).get_spend("acme", [("t:acme:day", time.strftime(
            "%Y-%m-%d", time.gmtime()))])
        assert spent[0] == pytest.approx(len(admitted) * reserve)
        assert spent[0] <= 1.0 + reserve
        with pytest.raises(BudgetExceeded):
            await a.admit(who, chat())


async def test_keys_carry_the_tenant_hash_tag(redis_server: RedisServer) -> None:
    async with replica(redis_server.url, cost_per_token=1e-6) as adm:
        who = principal(tenant_limits=Limits(requests_per_minute=5, tokens_per_minute=900,
                                             max_concurrent=3, daily_budget_usd=5.0))
        await adm.settle(await adm.admit(who, chat()), Usage(5, 5), 0.01)
        await adm.admit(who, chat())
        keys = [k.decode() for k in await store_of(adm).link.client.keys("*")]
        assert keys
        assert all(k.startswith("gw:{acme}:") for k in keys), keys


async def test_fail_open_admits_on_local_counters_while_redis_is_down(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as adm:
        fallbacks: list[int] = []
        store_of(adm).on_fallback = lambda: fallbacks.append(1)
        who = principal(tenant_limits=Limits(requests_per_minute=5))
        held = await adm.admit(who, chat())
        redis_server.stop()
        admitted, refused = await admit_all([adm], who, 10)
        assert len(admitted) == 5  # this replica's own bucket, full
        assert len(refused) == 5
        assert fallbacks
        for r in admitted:
            await adm.settle(r, Usage(1, 1), 0.0)
        await adm.settle(held, Usage(1, 1), 0.0)  # admitted on Redis: dropped, no error
        redis_server.start()  # empty: counting starts again, exactly
        await until(lambda: not store_of(adm).link.resting, "the link's rest to end")
        admitted, refused = await admit_all([adm], who, 10)
        assert (len(admitted), len(refused)) == (5, 5)


async def test_fail_closed_refuses_with_503_while_redis_is_down(redis_server: RedisServer) -> None:
    async with replica(redis_server.url, fail_open=False) as adm:
        who = principal(tenant_limits=Limits(requests_per_minute=5))
        await adm.admit(who, chat())
        redis_server.stop()
        with pytest.raises(ServiceUnavailable) as caught:
            await adm.admit(who, chat())
        assert caught.value.status == 503
        assert caught.value.body()["error"]["type"] == "service_unavailable"


async def test_a_redis_that_never_answers_costs_one_timeout_then_nothing() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read, never answer
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with replica(f"redis://127.0.0.1:{port}/0", timeout_ms=100,
                           retry_s=60.0) as adm:
            who = principal(tenant_limits=Limits(requests_per_minute=5))
            # Times out, then admits locally; the link then rests: the next never waits.
            first = await asyncio.wait_for(adm.admit(who, chat()), WAIT_S)
            assert store_of(adm).link.resting
            second = await asyncio.wait_for(adm.admit(who, chat()), WAIT_S)
            assert first.lease != second.lease
            assert not store_of(adm).link.up
    finally:
        server.close()
        await server.wait_closed()
