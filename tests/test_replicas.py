"""Three real gateway processes sharing one real Redis act as one gateway.

Each replica is ``python -m gateway serve`` with its own embedding worker (tests/replicas.py);
the provider is the in-process fake. Tenants, keys and the ledger are in one SQLite file that
the replicas share (until PostgreSQL is the store); the file's own change watch is slowed to an
hour, so what reaches a replica within the test goes through Redis.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from gateway.core.tenant_settings import Limits
from gateway.tenants.tokens import TokenCounter
from tests.fake_openai import FakeOpenAI, Reply
from tests.redis_server import RedisServer
from tests.replicas import (
    PRICE_PER_MTOK,
    ROOT,
    Replica,
    chat,
    create_tenants,
    start_replicas,
    stop_all,
)
from tests.tasks import until as until_within
from tests.tenant_fixtures import ADMIN_KEY
from tests.tenant_fixtures import chat as tenant_chat

pytestmark = pytest.mark.timeout(300)
WAIT_S = 30.0
until = functools.partial(until_within, timeout_s=WAIT_S)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


async def _fleet(tmp_path: Path, fake_url: str, redis_server: RedisServer,
                 session: aiohttp.ClientSession, tenants: dict[str, Limits],
                 **options: Any) -> tuple[list[Replica], dict[str, tuple[str, str]]]:
    keys = await create_tenants(tmp_path / "shared" / "gateway.sqlite3", tenants)
    replicas = await start_replicas(tmp_path, 3, upstream=fake_url, redis_url=redis_server.url,
                                    session=session, **options)
    return replicas, keys


async def test_300_requests_over_three_replicas_against_50_per_minute_admit_exactly_50(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    _, url = fake_openai
    replicas, keys = await _fleet(tmp_path, url, redis_server, session,
                                  {"acme": Limits(requests_per_minute=50)})
    try:
        key = keys["acme"][1]
        results = await asyncio.gather(*(chat(session, replicas[i % 3], key)
                                         for i in range(300)))
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) == 50
        assert statuses.count(429) == 250
        for status, headers, body in results:
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
                assert body["error"]["type"] == "rate_limit_error"
    finally:
        await stop_all(replicas)


async def test_a_budget_under_200_concurrent_requests_overshoots_by_at_most_one_reservation(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    fake, url = fake_openai
    fake.default = Reply(kind="hang")  # every admitted request stays in flight until released
    budget = 1.0
    replicas, keys = await _fleet(tmp_path, url, redis_server, session,
                                  {"thrifty": Limits(daily_budget_usd=budget)})
    try:
        key = keys["thrifty"][1]
        calls = [asyncio.ensure_future(chat(session, replicas[i % 3], key)) for i in range(200)]

        async def all_admitted_or_refused() -> bool:
            refused = sum(1 for c in calls if c.done() and c.result()[0] == 429)
            return refused + len(fake.requests) == len(calls)

        await until(all_admitted_or_refused, "every request admitted or refused")
        in_flight = len(fake.requests)
        fake.release.set()
        results = await asyncio.gather(*calls)
        assert [s for s, _, _ in results].count(200) == in_flight
        assert all(s in (200, 429) for s, _, _ in results)
        refused = [body for s, _, body in results if s == 429]
        assert refused and all(b["error"]["type"] == "insufficient_quota" for b in refused)
        # What each request reserved: its prompt estimate plus max_tokens, at the top price.
        request = tenant_chat("Say hello", model="small", max_tokens=50)
        reservation = (TokenCounter(None).prompt_tokens(request) + 50) * PRICE_PER_MTOK / 1e6
        spent = sum((b["usage"]["prompt_tokens"] + b["usage"]["completion_tokens"])
                    * PRICE_PER_MTOK / 1e6 for s, _, b in results if s == 200)
        assert in_flight * reservation >= budget  # reservations, not spend, stopped them
        assert spent <= budget + reservation
        assert await _redis_spend(redis_server, "thrifty") == pytest.approx(spent)
    finally:
        fake.release.set()
        await stop_all(replicas)


async def _redis_spend(server: RedisServer, tenant: str) -> float:
    client = redis.Redis.from_url(server.url)
    try:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        value = await client.hget(f"gw:{{{tenant}}}:b:t:{tenant}:day:{day}", "spent")
        return int(value or 0) / 1e6  # micro-dollars
    finally:
        await client.aclose()


async def test_a_key_revoked_through_one_replica_is_refused_by_the_others_at_once(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    _, url = fake_openai
    replicas, keys = await _fleet(tmp_path, url, redis_server, session, {"acme": Limits()})
    try:
        key_id, key = keys["acme"]
        a, b, c = replicas
        for replica in replicas:
            assert (await chat(session, replica, key))[0] == 200
        async with session.delete(f"{a.url}/admin/keys/{key_id}",
                                  headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            assert resp.status == 200
        revoked_at = time.monotonic()
        assert (await chat(session, a, key))[0] == 401
        for replica in (b, c):
            async def refused(replica: Replica = replica) -> bool:
                return (await chat(session, replica, key))[0] == 401

            await until(refused, f"replica {replica.name} to refuse the revoked key")
        # Reported, not asserted (a loaded machine is not a clock): the notice's delay.
        print(f"revocation reached B and C after {time.monotonic() - revoked_at:.3f} s")
        assert "keys or limits changed on replica" in b.log() + c.log()
    finally:
        await stop_all(replicas)


async def test_limits_changed_by_the_cli_reach_every_replica(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    _, url = fake_openai
    replicas, keys = await _fleet(tmp_path, url, redis_server, session, {"beta": Limits()})
    try:
        key = keys["beta"][1]
        assert {(await chat(session, r, key))[0] for r in replicas * 2} == {200}
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "tenants", "update", "beta", "--rpm", "1",
            "--config", str(replicas[0].config), cwd=ROOT, env=replicas[0].env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(cli.communicate(), WAIT_S)
        assert cli.returncode == 0, err
        assert b"requests_per_minute=1" in out and b"not notified" not in err
        for replica in replicas:  # six requests in the last minute: one per minute refuses
            async def limited(replica: Replica = replica) -> bool:
                return (await chat(session, replica, key))[0] == 429

            await until(limited, f"replica {replica.name} to apply the new limit")
    finally:
        await stop_all(replicas)


async def test_a_killed_replicas_leases_expire_while_the_others_answer(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    fake, url = fake_openai
    replicas, keys = await _fleet(tmp_path, url, redis_server, session,
                                  {"acme": Limits(max_concurrent=4), "steady": Limits()},
                                  cluster={"lease_s": 2.0})
    a, b, c = replicas
    try:
        fake.script.extend([Reply(kind="hang")] * 4)
        held = [asyncio.ensure_future(chat(session, c, keys["acme"][1])) for _ in range(4)]
        await asyncio.wait_for(fake.wait_for_requests(4), WAIT_S)
        assert (await chat(session, a, keys["acme"][1]))[0] == 429  # all four slots are C's
        c.kill()
        for call in held:
            with pytest.raises(aiohttp.ClientError):
                await call
        steady: list[int] = []

        async def slots_freed() -> bool:
            for replica in (a, b):  # the other tenant's requests are answered meanwhile
                steady.append((await chat(session, replica, keys["steady"][1]))[0])
            return (await chat(session, b, keys["acme"][1]))[0] == 200

        await until(slots_freed, "the dead replica's leases to expire")
        assert steady and set(steady) == {200}
        results = await asyncio.gather(*(chat(session, (a, b)[i % 2], keys["acme"][1])
                                         for i in range(4)))
        assert all(status in (200, 429) for status, _, _ in results)
    finally:
        fake.release.set()
        await stop_all(replicas)


async def test_redis_stopped_and_restarted_under_load_each_mode_behaves_as_configured(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    _, url = fake_openai
    replicas, keys = await _fleet(
        tmp_path, url, redis_server, session,
        {"acme": Limits(requests_per_minute=1000), "fresh": Limits(requests_per_minute=20)},
        cluster={"redis_retry_interval_s": 0.2},
        per_replica={2: {"redis_mode": "fail_closed"}},
    )
    a = replicas[0]  # A and B fail open, C fails closed
    key = keys["acme"][1]
    try:
        before = await asyncio.gather(*(chat(session, r, key) for r in replicas * 5))
        assert {s for s, _, _ in before} == {200}
        redis_server.stop()
        during = await asyncio.gather(*(chat(session, r, key) for r in replicas * 5))
        by_replica = {r.name: {s for s, _, _ in during[i::3]} for i, r in enumerate(replicas)}
        assert by_replica["A"] == by_replica["B"] == {200}
        assert by_replica["C"] == {503}
        for status, _, body in during:
            if status == 503:
                assert body["error"]["type"] == "service_unavailable"
        redis_server.start()

        async def all_back() -> bool:
            statuses = [(await chat(session, r, key))[0] for r in replicas]
            assert set(statuses) <= {200, 503}  # only C's promise, never another 5xx
            return set(statuses) == {200}

        await until(all_back, "every replica to use Redis again")
        results = await asyncio.gather(*(chat(session, replicas[i % 3], keys["fresh"][1])
                                         for i in range(60)))
        statuses = [s for s, _, _ in results]
        assert (statuses.count(200), statuses.count(429)) == (20, 40)  # exact again
        assert "is unavailable" in a.log() and "answers again" in a.log()
    finally:
        await stop_all(replicas)
