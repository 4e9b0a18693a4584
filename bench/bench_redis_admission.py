"""Admission on Redis: its latency and round trips, notice delay, and two replicas against one.

    .venv/bin/python bench/bench_redis_admission.py [--admissions 5000] [--seconds 5] [--rounds 3]

1. Admission latency: ``Admission.admit`` for a principal with every kind of limit (requests
   and tokens per minute, concurrency, daily and monthly budgets with reservations), one after
   another against a local ``redis-server`` (a fresh one, no persistence), then ``settle``;
   the in-memory counters side by side. Round trips are Redis's own count of commands
   (``INFO commandstats``) divided by the admissions.
2. Notice delay: a ``keys`` notice published by one replica's link until another's handler has
   it, one after another.
3. Throughput: ``gateway serve`` replicas (embedder off, explicit model, keys, Redis counters,
   ledger in a shared SQLite file) against ``bench/fake_upstream.py``; one replica under one
   ``wrk -c32``, then two replicas under one ``wrk -c16`` each, alternating for ``--rounds``.
   All of it shares this machine's cores: the figure says what a second process buys here,
   not what a second node would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import ROOT, free_port, start, stop, wait_port

sys.path.insert(0, str(ROOT))

from bench_proxy import ADMIN_ENV, LUA, wrk

from gateway.core.answer import Usage
from gateway.core.cluster import ClusterSettings
from gateway.core.notices import Notice, Notices
from gateway.core.redis_link import RedisLink
from gateway.core.tenant_settings import Limits
from gateway.tenants.auth import Principal
from gateway.tenants.counters import CounterStore, MemoryCounterStore
from gateway.tenants.quotas import Admission
from gateway.tenants.redis_counters import RedisCounterStore
from gateway.tenants.tokens import TokenCounter
from tests.tenant_fixtures import chat

LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, max_concurrent=10**6,
                daily_budget_usd=10.0**9, monthly_budget_usd=10.0**9)


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def admission_latency(url: str, count: int) -> dict[str, Any]:
    link = RedisLink(ClusterSettings(redis_url=url))
    stores: dict[str, CounterStore] = {
        "memory": MemoryCounterStore(),
        "redis": RedisCounterStore(link, lease_s=30.0, fail_open=False),
    }
    # Like a tenant with the default limits: all five kinds on the tenant, none on its key.
    who = Principal("bench", "key_1", "gw-bench", LIMITS, Limits())
    request = chat("How do I sort a list in Python?", max_tokens=200)
    results: dict[str, Any] = {"floor": await round_trip_floor(link, count)}
    try:
        for name, store in stores.items():
            adm = Admission(store, TokenCounter(None), cost_per_token=1e-6)
            for _ in range(500):  # warm up: scripts loaded, connections open
                await adm.settle(await adm.admit(who, request), Usage(10, 10), 0.0)
            held = []
            before = await _evalsha(link)
            admit_ms = []
            for _ in range(count):
                t0 = time.perf_counter()
                held.append(await adm.admit(who, request))
                admit_ms.append((time.perf_counter() - t0) * 1000)
            admitted = await _evalsha(link)
            settle_ms = []
            for reservation in held:
                t0 = time.perf_counter()
                await adm.settle(reservation, Usage(30, 40), 0.0001)
                settle_ms.append((time.perf_counter() - t0) * 1000)
            settled = await _evalsha(link)
            results[name] = {
                "admit_p50_ms": pct(admit_ms, 0.5), "admit_p99_ms": pct(admit_ms, 0.99),
                "settle_p50_ms": pct(settle_ms, 0.5), "settle_p99_ms": pct(settle_ms, 0.99),
                "round_trips_per_admission": (admitted[0] - before[0]) / count,
                "round_trips_per_settlement": (settled[0] - admitted[0]) / count,
                "redis_us_per_script": ((settled[1] - before[1]) / max(1, settled[0] - before[0])),
            }
    finally:
        await link.close()
    return results


async def round_trip_floor(link: RedisLink, count: int) -> dict[str, float]:
    """The least one round trip costs through the same client: a script that does nothing."""
    noop = link.client.register_script("return 1")
    await noop()
    took = []
    for _ in range(count):
        t0 = time.perf_counter()
        await link.call(lambda: noop())
        took.append((time.perf_counter() - t0) * 1000)
    return {"noop_script_p50_ms": pct(took, 0.5), "noop_script_p99_ms": pct(took, 0.99)}


async def _evalsha(link: RedisLink) -> tuple[int, float]:
    """EVALSHA calls so far and the microseconds Redis spent in them."""
    stats = (await link.client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), float(stats.get("usec", 0))


async def notice_delay(url: str, count: int) -> dict[str, float]:
    a, b = RedisLink(ClusterSettings(redis_url=url)), RedisLink(ClusterSettings(redis_url=url))
    sender, receiver = Notices(a), Notices(b)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def handler(notice: Notice) -> None:
        arrived.put_nowait(time.perf_counter())

    receiver.subscribe("keys", handler)
    listener = asyncio.create_task(receiver.listen(b, await receiver.connect(b)))
    delays = []
    try:
        for _ in range(count):
            sent = time.perf_counter()
            await sender.publish("keys", {"key_id": "k"})
            delays.append((await arrived.get() - sent) * 1000)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await a.close()
        await b.close()
    return {"p50_ms": pct(delays, 0.5), "p99_ms": pct(delays, 0.99), "max_ms": max(delays)}


def replica_config(folder: Path, upstream_port: int, redis_url: str, database: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateway.toml"
    path.write_text(f"""
[server]
data_dir = "{folder / 'data'}"
[tenants]
bootstrap = false
database = "{database}"
[cache]
enabled = false
[embedder]
enabled = false
[observability]
access_log = false
[cluster]
redis_url = "{redis_url}"
[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
[[models]]
name = "bench"
provider = "fake"
upstream_model = "bench-upstream"
tier = "cheap"
input_price_per_mtok = 0.1
output_price_per_mtok = 0.2
""")
    return path


def make_key(config: Path) -> str:
    env = {**os.environ, **ADMIN_ENV}
    cli = [sys.executable, "-m", "gateway", "--log-level", "WARNING"]
    limits = ["--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "100000",
              "--daily-budget", "1000000000"]
    subprocess.run([*cli, "tenants", "create", "bench", "--init", *limits, "--config", str(config)],
                   check=True, capture_output=True, env=env, cwd=ROOT)
    out = subprocess.run([*cli, "keys", "create", "bench", "--config", str(config)],
                         check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
    return next(line.strip() for line in out.splitlines() if line.startswith("gw-"))


def throughput(folder: Path, redis_url: str, seconds: float, rounds: int) -> dict[str, Any]:
    upstream_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(upstream_port)])
    database = folder / "shared" / "gateway.sqlite3"
    configs = [replica_config(folder / f"r{i}", upstream_port, redis_url, database)
               for i in range(2)]
    key = make_key(configs[0])
    script = folder / "bench.lua"
    script.write_text(LUA % ('{"model": "bench", "messages": [{"role": "user", '
                             '"content": "Hello there, benchmark!"}]}', key))
    ports = [free_port(), free_port()]
    gateways = [start(["-m", "gateway", "--log-level", "WARNING", "serve", "--config", str(c),
                       "--port", str(p)], ADMIN_ENV) for c, p in zip(configs, ports, strict=True)]
    one, two, errors = [], [], 0
    try:
        wait_port(upstream_port)
        for p in ports:
            wait_port(p)
        url = "http://127.0.0.1:{}/v1/chat/completions"
        wrk(url.format(ports[0]), 16, 1, script)  # warm up both
        wrk(url.format(ports[1]), 16, 1, script)
        for _ in range(rounds):
            single = wrk(url.format(ports[0]), 32, seconds, script)
            one.append(single["rps"])
            errors += int(single["errors"])
            pair = _parallel_wrk([url.format(p) for p in ports], 16, seconds, script)
            two.append(sum(r["rps"] for r in pair))
            errors += sum(int(r["errors"]) for r in pair)
    finally:
        for proc in [*gateways, upstream]:
            stop(proc)
    return {"one_rps": statistics.median(one), "two_rps": statistics.median(two),
            "ratio": statistics.median(two) / statistics.median(one), "non_2xx": errors,
            "rounds": rounds}


def _parallel_wrk(urls: list[str], concurrency: int, seconds: float,
                  script: Path) -> list[dict[str, float]]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(lambda u: wrk(u, concurrency, seconds, script), urls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admissions", type=int, default=5000)
    parser.add_argument("--notices", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis, url = start_redis(folder)
        try:
            latency = asyncio.run(admission_latency(url, args.admissions))
            for name, figures in latency.items():
                print(f"admission ({name}): " + ", ".join(f"{k} {v:.3f}"
                                                         for k, v in figures.items()))
            notices = asyncio.run(notice_delay(url, args.notices))
            print("notice delay: " + ", ".join(f"{k} {v:.3f}" for k, v in notices.items()))
            if not args.skip_throughput:
                figures = throughput(folder, url, args.seconds, args.rounds)
                print("throughput: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float)
                                                 else f"{k} {v}" for k, v in figures.items()))
        finally:
            stop(redis)


if __name__ == "__main__":
    main()
