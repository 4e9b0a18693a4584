"""How fast replicas sharing one PostgreSQL see each other's changes, end to end.

    .venv/bin/python bench/bench_pg_replicas.py [--entries 20] [--keys 10]

Starts Debian's PostgreSQL in a temporary folder, a fake OpenAI-compatible provider in this
process, and two ``gateway serve`` replicas (tests/replicas.py: each with its embedding worker,
the cache on, ``[cluster] database_url``, no Redis), then measures, one after another:

1. cache: from replica A's answer to a new question (a miss, so A stores it) until replica B's
   ``/admin/cache`` counts the entry: A's writer flush (``cache.flush_interval_s``, 0.2 s) +
   COPY and NOTIFY + B reading the row and adding its vector to its graph;
2. keys: from ``DELETE /admin/keys/{id}`` answered by A until B refuses the key, with no Redis:
   B notices by polling the store's revision every ``tenants.reload_interval_s`` (the default,
   1 s). With ``redis_url`` a ``keys`` notice makes this immediate (bench_redis_admission.py).

B is polled every 5 ms, so figures carry up to that much on top. Everything shares this machine's
cores with the replicas, their workers and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.*

from tests.fake_openai import FakeOpenAI, fake_openai_app
from tests.postgres_fixtures import create_database, running_postgres
from tests.redis_server import free_port
from tests.replicas import Replica, start_replicas, stop_all
from tests.tenant_fixtures import ADMIN_KEY, bearer

POLL_S = 0.005


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> float:
    """Seconds until ``check`` holds."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout_s:
            raise RuntimeError("timed out")
        await asyncio.sleep(POLL_S)
    return time.perf_counter() - start


def summary(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {"n": len(ordered), "p50_ms": statistics.median(ordered) * 1000,
            "max_ms": ordered[-1] * 1000, "min_ms": ordered[0] * 1000}


async def new_key(session: aiohttp.ClientSession, replica: Replica, tenant: str) -> tuple[str, str]:
    async with session.post(f"{replica.url}/admin/tenants/{tenant}/keys",
                            headers=bearer(ADMIN_KEY)) as resp:
        body = await resp.json()
    return str(body["key"]), str(body["id"])


async def accepts(session: aiohttp.ClientSession, replica: Replica, key: str) -> bool:
    async with session.get(f"{replica.url}/v1/models", headers=bearer(key)) as resp:
        return resp.status == 200


async def cache_entries(session: aiohttp.ClientSession, replica: Replica) -> int:
    async with session.get(f"{replica.url}/admin/cache", headers=bearer(ADMIN_KEY)) as resp:
        return int((await resp.json())["entries"])


async def cache_delays(session: aiohttp.ClientSession, a: Replica, b: Replica, key: str,
                       count: int) -> list[float]:
    delays = []
    for i in range(count):
        async with session.post(f"{a.url}/v1/chat/completions", headers=bearer(key), json={
                "model": "small", "messages": [{"role": "user", "content": f"Question {i}?"}]}
                                ) as resp:
            assert resp.status == 200 and resp.headers["x-gateway-cache"] == "miss"
            await resp.read()

        async def seen(want: int = i + 1) -> bool:
            return await cache_entries(session, b) >= want

        delays.append(await until(seen))
    return delays


async def key_delays(session: aiohttp.ClientSession, a: Replica, b: Replica,
                     count: int) -> list[float]:
    delays = []
    for _ in range(count):
        key, key_id = await new_key(session, a, "bench")
        await until(lambda key=key: accepts(session, b, key))
        async with session.delete(f"{a.url}/admin/keys/{key_id}",
                                  headers=bearer(ADMIN_KEY)) as resp:
            assert resp.status == 200

        async def refused(key: str = key) -> bool:
            return not await accepts(session, b, key)

        delays.append(await until(refused))
    return delays


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20)
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()
    runner = web.AppRunner(fake_openai_app(FakeOpenAI()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    results: dict[str, Any] = {}
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        url = await create_database(server, "bench")
        async with aiohttp.ClientSession() as session:
            replicas = await start_replicas(
                Path(tmp), 2, upstream=f"http://127.0.0.1:{port}/v1", redis_url=None,
                session=session, cluster={"database_url": url}, cache=True,
                tenants={"reload_interval_s": 1.0},
            )
            try:
                a, b = replicas
                async with session.post(f"{a.url}/admin/tenants", headers=bearer(ADMIN_KEY),
                                        json={"name": "bench"}) as resp:
                    assert resp.status == 201
                key, _ = await new_key(session, a, "bench")
                await until(lambda: accepts(session, b, key))
                results["cache entry A -> B"] = summary(
                    await cache_delays(session, a, b, key, args.entries))
                results["key revoked on A -> refused by B"] = summary(
                    await key_delays(session, a, b, args.keys))
            finally:
                await stop_all(replicas)
    await runner.cleanup()
    for name, r in results.items():
        print(f"{name:<36} n={r['n']:<3} p50 {r['p50_ms']:7.1f} ms  min {r['min_ms']:7.1f} ms  "
              f"max {r['max_ms']:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
