"""The tenants' cost on the request path, and the ledger's sustained write rate.

    .venv/bin/python bench/bench_auth.py [--iterations 20000] [--seconds 10] [--json]

1. authenticate + admit + settle, in-process, for a key whose tenant has every limit (requests,
   tokens, concurrency, daily and monthly budgets) so every check runs; the prompt is counted with
   the real tokenizer when ``models/all-MiniLM-L6-v2/tokenizer.json`` is present. Goal: p50 of
   the three together at most 0.1 ms.
2. admit + rate-limit headers + settle in a hot loop, for a key with request and token limits
   only (no budgets, no concurrency): the mean per request, best of 7 rounds. This is what every
   chat request pays in ``gateway/tenants/quotas.py``; cProfile it when it grows.
3. The ledger: a producer keeps the queue fed (never above half its bound) for ``--seconds`` while
   the background writer flushes to a real SQLite file; reports rows/s written, drops, and
   resident memory sampled every second (it should stay flat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.core.answer import Usage
from gateway.core.chat import parse_chat_request
from gateway.core.tenant_settings import LedgerSettings, Limits, TenantSettings
from gateway.tenants.auth import Authenticator, Principal
from gateway.tenants.context import load_admission
from gateway.tenants.counters import MemoryCounterStore
from gateway.tenants.keys import hash_key
from gateway.tenants.ledger import Ledger, UsageRecord
from gateway.tenants.quotas import Admission, rate_limit_headers
from gateway.tenants.store import Store
from gateway.tenants.tokens import TokenCounter

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"bench-secret-0123456789abcdef0123"
LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, max_concurrent=1000,
                daily_budget_usd=10**9, monthly_budget_usd=10**9)
BODY = {"model": "auto", "max_tokens": 256,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France, and why?"}]}


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def bench_request_path(data_dir: Path, iterations: int) -> dict[str, Any]:
    store = await Store.open(data_dir / "gateway.sqlite3")
    try:
        await store.create_tenant("bench", LIMITS)
        _, key = await store.create_key(SECRET, "bench")
        auth = Authenticator(SECRET, hash_key(SECRET, "admin-key-for-bench-0123"))
        await auth.reload(store)
        settings = TenantSettings(tokenizer=ROOT / "models/all-MiniLM-L6-v2/tokenizer.json")
        admission = await load_admission(store, settings)
    finally:
        await store.close()
    request = parse_chat_request(orjson.dumps(BODY))
    header, usage = f"Bearer {key}", Usage(30, 120)
    parts: dict[str, list[float]] = {"authenticate": [], "admit": [], "settle": [], "total": []}
    for _ in range(iterations // 10):  # warm-up
        res = await admission.admit(auth.authenticate(header), request)
        await admission.settle(res, usage, 0.0001)
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        principal = auth.authenticate(header)
        t1 = time.perf_counter_ns()
        reservation = await admission.admit(principal, request)
        t2 = time.perf_counter_ns()
        await admission.settle(reservation, usage, 0.0001)
        t3 = time.perf_counter_ns()
        for name, ns in (("authenticate", t1 - t0), ("admit", t2 - t1), ("settle", t3 - t2),
                         ("total", t3 - t0)):
            parts[name].append(ns / 1e6)
    return {
        "tokenizer": admission.tokens.exact,
        **{f"{name}_p50_ms": statistics.median(v) for name, v in parts.items()},
        "total_p99_ms": percentile(parts["total"], 0.99),
    }


async def bench_hot_loop(iterations: int) -> dict[str, Any]:
    admission = Admission(MemoryCounterStore(), TokenCounter(None))
    principal = Principal("bench", "key_abc", "gw-abc",
                          Limits(requests_per_minute=10**8, tokens_per_minute=10**10), Limits())
    request = parse_chat_request(orjson.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": "Hello there, benchmark!"}]}
    ))
    usage = Usage(10, 20)

    async def run(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            reservation = await admission.admit(principal, request)
            rate_limit_headers(reservation)
            await admission.settle(reservation, usage, 1e-6)
        return (time.perf_counter() - start) / count

    await run(iterations // 10)  # warm-up
    return {"per_request_us": min([await run(iterations) for _ in range(7)]) * 1e6}


def record(i: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{i}", tenant=f"t{i % 10}", key_id=f"key_{i % 50}", model="small",
        status=200, ts=time.time(), route="chat", tier="cheap", deployment="p/small",
        tokens_in=120, tokens_out=250, cost=0.0004, cache="miss", attempts=1, latency_ms=350.0,
        ttft_ms=80.0,
    )


async def bench_ledger(data_dir: Path, seconds: float) -> dict[str, Any]:
    store = await Store.open(data_dir / "ledger.sqlite3")
    settings = LedgerSettings()
    ledger = Ledger(store, settings)
    ledger.start()
    samples, produced = [rss_mib()], 0
    start = time.perf_counter()
    next_sample = start + 1.0
    try:
        while (now := time.perf_counter()) - start < seconds:
            if ledger.pending < settings.max_pending_rows // 2:
                for _ in range(200):
                    ledger.record(record(produced))
                    produced += 1
            await asyncio.sleep(0)
            if now >= next_sample:
                samples.append(rss_mib())
                next_sample += 1.0
        elapsed = time.perf_counter() - start
        written = ledger.written
        await ledger.close()
    finally:
        await store.close()
    return {
        "rows_per_s": round(written / elapsed),
        "rows_written": written,
        "dropped": ledger.dropped,
        "rss_mib_after_1s": round(samples[1] if len(samples) > 1 else samples[0], 1),
        "rss_mib_last_s": round(samples[-1], 1),
        "rss_mib_samples": [round(s, 1) for s in samples],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "request_path": await bench_request_path(Path(tmp), args.iterations),
            "hot_loop": await bench_hot_loop(args.iterations),
            "ledger": await bench_ledger(Path(tmp), args.seconds),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for section, values in results.items():
        print(section)
        for name, value in values.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"  {name:<22} {shown}")


if __name__ == "__main__":
    asyncio.run(main())
