"""Every request a different prompt: what ``auto``, the semantic cache and an explicit model cost
when no embedding can be reused, beside the embedding worker's own throughput on the same texts.

    .venv/bin/python bench/bench_unique.py [--seconds 6] [--concurrency 1 16 64] [--data DIR]

Prompts are the distinct texts of CLINC150 and BANKING77 (``../shared/data``, about 25,000); no
prompt is sent twice in a run, so the gateway's text LRU and the cache never answer from memory.
One fake upstream (``bench/fake_upstream.py``), one gateway with its supervised worker (the
default configuration: one worker), the full keyed path. Modes, side by side in one run:

- explicit: an explicit model, the cache bypassed (no embedding at all, so its prompts may
  repeat);
- auto: ``model: "auto"``, the cache bypassed: one embedding per request, for routing;
- cache: an explicit model with the semantic cache on: one embedding, a lookup (a miss: every
  prompt is new) and a store.

For each mode and concurrency: requests/s, latency p50/p99 (closed loop, ``--seconds`` each),
and CPU per request split between the gateway process and its worker (from /proc). Last, the
worker alone (a fresh one, its own socket, no LRU) on the same kind of texts at the same
concurrency: its queries/s is the ceiling for ``auto``; the ratio ``auto`` / worker at c=16 is
the figure the issue asks for (goal >= 0.70). The prompts are shuffled with a fixed seed, so the
worker alone embeds texts from the same mix as the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_embedder import start_worker, throughput
from bench_proxy import ADMIN_ENV, create_key, gateway_config
from procs import ROOT, cpu_s, free_port, start, stop, wait_port, wait_ready

from embedder_worker.client import EmbedderPool

BYPASS = {"Cache-Control": "no-cache, no-store"}
MODES = ("explicit", "auto", "cache")
WORKER_TEXTS = 1500  # the worker alone embeds this many of the prompts the run did not send


def unique_prompts(data: Path) -> list[str]:
    """The distinct texts of CLINC150 (train and val) and BANKING77, in a fixed order."""
    texts = [text for name in ("train", "val")
             for split in json.loads((data / f"clinc150/{name}.json").read_text()).values()
             for text, _ in split]
    with (data / "banking77/train.csv").open(newline="") as f:
        texts += [row["text"] for row in csv.DictReader(f)]
    unique = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    random.Random(20).shuffle(unique)  # every slice of the run draws from the same mix
    return unique


def config(up_port: int, data_dir: str) -> str:
    """The benchmark gateway with the cache on (``auto`` and ``explicit`` bypass it per
    request)."""
    return gateway_config(up_port, data_dir).replace("[cache]\nenabled = false\n",
                                                     "[cache]\nenabled = true\n")


def worker_pid(gateway_pid: int) -> int:
    """The supervised embedding worker: the gateway's child process."""
    children = Path(f"/proc/{gateway_pid}/task/{gateway_pid}/children").read_text().split()
    return int(children[0])


class Feed:
    """Hands out each prompt once across every mode and concurrency of the run; with ``cycle``
    (explicit models, which embed nothing) the same prompts may come round again."""

    def __init__(self, texts: list[str], cycle: bool = False) -> None:
        self.texts = texts
        self.cycle = cycle
        self.next = 0

    def take(self) -> str:
        if self.next >= len(self.texts):
            if not self.cycle:
                raise RuntimeError("out of unique prompts: lower --seconds")
            self.next = 0
        self.next += 1
        return self.texts[self.next - 1]


async def load(url: str, key: str, mode: str, feed: Feed, concurrency: int,
               seconds: float, count: float = math.inf) -> list[float]:
    """Latencies (ms) of a closed loop of ``concurrency`` callers for ``seconds`` or until
    about ``count`` requests have been answered, whichever comes first."""
    headers = {"Authorization": f"Bearer {key}", **({} if mode == "cache" else BYPASS)}
    model = "auto" if mode == "auto" else "bench"
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def caller() -> None:
            while time.monotonic() < deadline and len(latencies) < count:
                body = {"model": model, "messages": [{"role": "user", "content": feed.take()}]}
                started = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{mode}: HTTP {resp.status}")
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


def row(mode: str, c: int, latencies: list[float], seconds: float, gw_cpu: float,
        worker_cpu: float) -> str:
    n = len(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if n >= 100 else max(latencies)
    return (f"| {mode} | {c} | {n / seconds:,.0f} | {statistics.median(latencies):.2f} | "
            f"{p99:.2f} | {gw_cpu / n * 1000:.2f} | {worker_cpu / n * 1000:.2f} |")


async def worker_alone(texts: list[str], concurrency: int) -> float:
    """Queries/s of a fresh worker (no LRU) on ``texts`` at ``concurrency``."""
    with tempfile.TemporaryDirectory(prefix="bench-unique-") as tmp:
        worker = await start_worker(ROOT / "models/all-MiniLM-L6-v2", Path(tmp) / "w.sock")
        pool = EmbedderPool(call_timeout_ms=60_000, lru_size=0)
        try:
            await pool.attach(worker.socket)
            await throughput(pool, texts[:64], concurrency)  # warm
            return await throughput(pool, texts[64:], concurrency)
        finally:
            await pool.close()
            worker.process.terminate()
            await worker.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data",
                        help="the shared data sets (from a worktree: /work/shared/data)")
    args = parser.parse_args()
    texts = unique_prompts(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="bench-unique-"))
    up_port, gw_port = free_port(), free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port)])
    wait_port(up_port)
    cfg = tmp / "gateway.toml"
    cfg.write_text(config(up_port, str(tmp / "data")))
    key = create_key(cfg)
    gateway = start(["-m", "gateway", "serve", "--config", str(cfg), "--port", str(gw_port)],
                    env=ADMIN_ENV)
    feed, explicit_feed = Feed(texts), Feed(texts, cycle=True)
    rows = []
    try:
        wait_port(gw_port)
        asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/readyz"))
        worker = worker_pid(gateway.pid)
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        for c in args.concurrency:
            for mode in MODES:  # modes alternate within each concurrency: drift hits all alike
                gw0, w0 = cpu_s(gateway.pid), cpu_s(worker)
                source = explicit_feed if mode == "explicit" else feed
                latencies = asyncio.run(load(url, key, mode, source, c, args.seconds))
                rows.append((mode, c, latencies, cpu_s(gateway.pid) - gw0, cpu_s(worker) - w0))
    finally:
        stop(gateway)
        stop(upstream)
    rest = texts[feed.next:]
    alone = {c: asyncio.run(worker_alone(rest[:WORKER_TEXTS], c)) for c in args.concurrency}
    print(f"{len(texts):,} unique prompts, {feed.next:,} sent; {args.seconds:g} s per cell\n")
    print("| mode | c | requests/s | p50 ms | p99 ms | gateway CPU ms/req | worker CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    for mode, c, latencies, gw, w in rows:
        print(row(mode, c, latencies, args.seconds, gw, w))
    print("\n| c | worker alone, queries/s | auto requests/s | auto / worker |\n|---|---|---|---|")
    for c in args.concurrency:
        auto = next(len(lat) / args.seconds for m, cc, lat, _, _ in rows
                    if m == "auto" and cc == c)
        print(f"| {c} | {alone[c]:,.0f} | {auto:,.0f} | {auto / alone[c]:.2f} |")


if __name__ == "__main__":
    main()
