"""Every request a different prompt: what ``auto``, the semantic cache and an explicit model cost
when no embedding can be reused, beside the embedding worker's own throughput on the same texts.

    .venv/bin/python bench/bench_unique.py [--seconds 6] [--concurrency 1 16 64] [--data DIR]
        [--rounds 5] [--pair-seconds 3] [--pair-client wrk|aiohttp]

Prompts are the distinct texts of CLINC150 and BANKING77 (``../shared/data``, about 28,000); no
prompt of ``auto`` or the cache is sent twice in the modes' table, so the gateway's text LRU and
the cache never answer from memory.
One fake upstream (``bench/fake_upstream.py``), one gateway with its supervised worker (the
default configuration: one worker), the full keyed path. Modes, side by side in one run:

- explicit: an explicit model, the cache bypassed (no embedding at all, so its prompts may
  repeat);
- auto: ``model: "auto"``, the cache bypassed: one embedding per request, for routing;
- cache: an explicit model with the semantic cache on: one embedding, a lookup (a miss: every
  prompt is new) and a store.

For each mode and concurrency: requests/s (answers over the loop's own elapsed time), latency
p50/p99 (closed loop, ``--seconds`` each), and CPU per request split between the gateway
process and its worker (from /proc).

Then the figure the issue asks for, ``auto`` / the worker alone at c=16 (goal >= 0.70), in
``--rounds`` pairs that alternate, ``--pair-seconds`` each: ``auto`` through the gateway, driven
by wrk (one thread, as ``bench_proxy`` drives the gateway; ``--pair-client aiohttp`` for this
process's Python client, which spends ~0.3 ms of the same two cores per request), then a
second worker started with the gateway's own worker command (same settings), called directly
through an ``EmbedderPool`` with no LRU at the same concurrency, while the gateway sits idle
(~5 ms of CPU a second). Each phase takes the next prompts of one shuffled list, so both embed
texts from the same mix, and a prompt comes round again only after every other one (far past
the gateway's 1,024-text LRU). Alternating matters on a shared machine: two phases run minutes
apart saw different machines (a ratio of 0.12 once). Each pair's ratio is printed with the CPU
per request of the gateway, its worker, the load generator (wrk, or this process) and the
fake upstream, and of the worker alone and its caller, so the cores' use is on the table.
"CPU ratio" is derived from those: the worker alone's CPU per text over ``auto``'s CPU per
request summed over every process, i.e. the ratio both phases would show on the same cores
fully used. Other jobs on a shared machine move it much less than the throughput ratio, which
stays the goal's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import random
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from bench_proxy import ADMIN_ENV, create_key, gateway_config, wrk_argv, wrk_figures
from procs import ROOT, cpu_s, free_port, start, stop, wait_port, wait_ready

from embedder_worker.client import EmbedderPool
from embedder_worker.settings import EmbedderSettings
from embedder_worker.supervisor import worker_command

BYPASS = {"Cache-Control": "no-cache, no-store"}
MODES = ("explicit", "auto", "cache")
MODEL = ROOT / "models/all-MiniLM-L6-v2"
# wrk (one thread) sends the next line of the bodies file for each request.
WRK_LUA = """local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Cache-Control"] = "no-cache, no-store"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
WRK_MAX_RPS = 3000  # bodies written per second of a wrk phase: more than auto ever reaches


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
    """A mode's line; ``seconds``: the loop's elapsed time."""
    n = len(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if n >= 100 else max(latencies)
    return (f"| {mode} | {c} | {n / seconds:,.0f} | {statistics.median(latencies):.2f} | "
            f"{p99:.2f} | {gw_cpu / n * 1000:.2f} | {worker_cpu / n * 1000:.2f} |")


async def timed_load(url: str, key: str, mode: str, feed: Feed, concurrency: int,
                     seconds: float) -> tuple[list[float], float]:
    """``load``'s latencies and its elapsed seconds (the callers finish what is in flight
    after the deadline, so the elapsed time, not ``seconds``, divides the count)."""
    started = time.perf_counter()
    latencies = await load(url, key, mode, feed, concurrency, seconds)
    return latencies, time.perf_counter() - started


def wrk_bodies(key: str, feed: Feed, seconds: float, tmp: Path) -> tuple[Path, int]:
    """A wrk script sending the next prompts of ``feed`` as ``auto`` requests, and how many
    bodies it holds (written before the phase, so its CPU is not counted in it)."""
    count = WRK_MAX_RPS * max(1, round(seconds))
    start_at = feed.next
    bodies = tmp / "bodies.jsonl"
    bodies.write_text("".join(
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": feed.take()}]})
        + "\n" for _ in range(count)))
    feed.next = start_at  # handed back: wrk_auto takes what wrk sent
    script = tmp / "auto.lua"
    script.write_text(WRK_LUA % (bodies, key))
    return script, count


def wrk_auto(url: str, script: Path, count: int, feed: Feed, concurrency: int, seconds: float
             ) -> tuple[int, float, float]:
    """Run ``script`` (``wrk_bodies``): answers, elapsed seconds, wrk's CPU seconds."""
    proc = subprocess.Popen(wrk_argv(url, concurrency, seconds, script),
                            stdout=subprocess.PIPE, text=True)
    cpu = 0.0
    while proc.poll() is None:  # its CPU as last seen alive (it reports within ms of the end)
        with contextlib.suppress(OSError, ValueError):
            cpu = cpu_s(proc.pid)
        time.sleep(0.02)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    result = wrk_figures(out)
    if result["errors"]:
        raise RuntimeError(f"auto under wrk: {result['errors']:.0f} answers were not 200")
    sent = int(result["requests"])
    if sent >= count:
        raise RuntimeError("wrk ran out of unique bodies: raise WRK_MAX_RPS")
    for _ in range(sent):
        feed.take()
    return sent, sent / result["rps"], cpu


async def worker_phase(pool: EmbedderPool, feed: Feed, concurrency: int, seconds: float
                       ) -> tuple[int, float]:
    """Texts embedded by ``concurrency`` callers of the worker alone within ``seconds`` (each
    the next prompt of ``feed``), and the elapsed seconds."""
    done = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await pool.embed_one(feed.take())
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done, time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Pair:
    """One round: ``auto`` through the gateway, then the worker alone; CPU ms per request."""

    auto_rps: float
    alone_qps: float
    gateway_ms: float
    gateway_worker_ms: float
    client_ms: float
    upstream_ms: float
    alone_ms: float
    alone_client_ms: float

    @property
    def cpu_ratio(self) -> float:
        """The ratio were both phases held to the same fully used cores: the worker alone's
        CPU per text (with its caller's) over ``auto``'s CPU per request in every process."""
        auto = self.gateway_ms + self.gateway_worker_ms + self.client_ms + self.upstream_ms
        return (self.alone_ms + self.alone_client_ms) / auto

    def row(self, c: int, i: int) -> str:
        return (f"| {c} | {i} | {self.auto_rps:,.0f} | {self.alone_qps:,.0f} | "
                f"{self.auto_rps / self.alone_qps:.2f} | {self.cpu_ratio:.2f} | "
                f"{self.gateway_ms:.2f} | "
                f"{self.gateway_worker_ms:.2f} | {self.client_ms:.2f} | {self.upstream_ms:.2f} | "
                f"{self.alone_ms:.2f} | {self.alone_client_ms:.2f} |")


def _ms(before: float, after: float, count: int) -> float:
    return (after - before) / max(count, 1) * 1000


async def pairs(url: str, key: str, pids: tuple[int, int, int], feed: Feed, concurrency: int,
                rounds: int, seconds: float, client: str) -> list[Pair]:
    """``rounds`` alternating pairs of ``auto`` and the worker alone (see the docstring);
    ``pids``: the gateway, its worker and the fake upstream; ``client``: what drives
    ``auto``, ``wrk`` or ``aiohttp`` (this process, as in the modes' table)."""
    settings = EmbedderSettings(model_dir=MODEL)
    with tempfile.TemporaryDirectory(prefix="bench-unique-") as tmp:
        sock = Path(tmp) / "alone.sock"
        process = await asyncio.create_subprocess_exec(
            *worker_command(settings, sock), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT)
        assert process.stdout is not None
        while not (line := await process.stdout.readline()).startswith(b"READY"):
            if not line:
                raise RuntimeError("the worker alone exited before READY")
        pool = EmbedderPool(call_timeout_ms=60_000, lru_size=0)
        out: list[Pair] = []
        try:
            await pool.attach(sock)
            await worker_phase(pool, feed, concurrency, 0.5)  # warm, like the gateway's worker
            for _ in range(rounds):
                if client == "wrk":
                    script, count = wrk_bodies(key, feed, seconds, Path(tmp))
                cpu0 = [cpu_s(pid) for pid in pids] + [time.process_time()]
                if client == "wrk":
                    n, auto_s, wrk_s = await asyncio.to_thread(wrk_auto, url, script, count,
                                                               feed, concurrency, seconds)
                else:
                    latencies, auto_s = await timed_load(url, key, "auto", feed, concurrency,
                                                         seconds)
                    n, wrk_s = len(latencies), 0.0
                cpu1 = [cpu_s(pid) for pid in pids] + [time.process_time() + wrk_s]
                alone0 = (cpu_s(process.pid), time.process_time())
                done, alone_s = await worker_phase(pool, feed, concurrency, seconds)
                alone1 = (cpu_s(process.pid), time.process_time())
                gw, gw_worker, upstream, loadgen = (_ms(a, b, n) for a, b in zip(
                    cpu0, cpu1, strict=True))
                out.append(Pair(n / auto_s, done / alone_s, gw, gw_worker, loadgen, upstream,
                                _ms(alone0[0], alone1[0], done), _ms(alone0[1], alone1[1], done)))
        finally:
            await pool.close()
            process.terminate()
            await process.wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=5, help="pairs of auto / worker alone")
    parser.add_argument("--pair-seconds", type=float, default=3.0)
    parser.add_argument("--pair-client", choices=("wrk", "aiohttp"), default="wrk",
                        help="what drives auto in the pairs")
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
    paired: dict[int, list[Pair]] = {}
    try:
        wait_port(gw_port)
        asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/readyz"))
        worker = worker_pid(gateway.pid)
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        for c in args.concurrency:
            for mode in MODES:  # modes alternate within each concurrency: drift hits all alike
                gw0, w0 = cpu_s(gateway.pid), cpu_s(worker)
                source = explicit_feed if mode == "explicit" else feed
                latencies, elapsed = asyncio.run(timed_load(url, key, mode, source, c,
                                                            args.seconds))
                rows.append((mode, c, latencies, elapsed, cpu_s(gateway.pid) - gw0,
                             cpu_s(worker) - w0))
        sent = feed.next
        # What the modes did not send first; then round again (auto bypasses the cache).
        rest = Feed(texts[sent:] + texts[:sent], cycle=True)
        pids = (gateway.pid, worker, upstream.pid)
        for c in args.concurrency:
            paired[c] = asyncio.run(pairs(url, key, pids, rest, c, args.rounds,
                                          args.pair_seconds, args.pair_client))
    finally:
        stop(gateway)
        stop(upstream)
    print(f"{len(texts):,} unique prompts, {sent:,} sent by the modes; {args.seconds:g} s per "
          f"cell\n")
    print("| mode | c | requests/s | p50 ms | p99 ms | gateway CPU ms/req | worker CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    for mode, c, latencies, elapsed, gw, w in rows:
        print(row(mode, c, latencies, elapsed, gw, w))
    print(f"\nauto ({args.pair_client}) / the worker alone, {args.rounds} alternating pairs of "
          f"{args.pair_seconds:g} s (CPU in ms per request or text)\n")
    print("| c | pair | auto requests/s | worker alone queries/s | auto / worker | CPU ratio | "
          "gateway | its worker | load generator | fake upstream | worker alone | its caller |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c, results in paired.items():
        for i, pair in enumerate(results, 1):
            print(pair.row(c, i))
        ratios = [p.auto_rps / p.alone_qps for p in results]
        cpu = statistics.median(p.cpu_ratio for p in results)
        gateway = statistics.median(p.gateway_ms for p in results)
        print(f"| {c} | median | | | **{statistics.median(ratios):.2f}** | {cpu:.2f} | "
              f"{gateway:.2f} | | | | | |")


if __name__ == "__main__":
    main()
