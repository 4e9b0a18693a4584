"""Memory of a gateway and its one embedding worker, idle after start and after unique-prompt load,
and the cold start; several builds side by side in one run.

    .venv/bin/python bench/bench_memory.py [--requests 2000] [--concurrency 16] [--rounds 2]
        [--cache] [--data DIR] [--tree DIR ...]

Each ``--tree`` is a checkout of the repository (default: this one); its gateway runs with that
tree's code (``PYTHONPATH``, working directory) and the same model directory, fake upstream
(``bench/fake_upstream.py``) and configuration (``bench_proxy.gateway_config``: the full keyed
path, one worker). Trees alternate within each round, so drift on a shared machine hits all alike.
For each start: cold start (process start to ``/readyz`` answering 200, the worker loaded and
warm), then memory idle (once ready), then after ``--requests`` ``model: "auto"`` requests on
prompts that are all different (``bench_unique.unique_prompts``; the cache bypassed, so each one
costs an embedding), then ``--quiet-s`` after the load stopped.

Memory per process from ``/proc/PID/smaps_rollup``: RSS (what ``ps`` and the issue report), PSS
(shared pages divided among the processes that map them), USS (private pages: what stopping the
process would free) and the anonymous part (heap, arenas, prepacked weights: what no file backs).
Pages of a memory-mapped model file count in RSS and PSS but are page cache: shared by every worker
that maps the same file and reclaimable under pressure.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_proxy import ADMIN_ENV, create_key, gateway_config
from bench_unique import BYPASS, Feed, load, unique_prompts, worker_pid
from procs import ROOT, free_port, start, stop, wait_port, wait_ready

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous")
FIGURES = ("rss", "pss", "uss", "anon", "weights")


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS, USS and anonymous MiB of one process."""
    raw: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in FIELDS:
            raw[name] = int(value.split()[0]) / 1024
    return {"rss": raw["Rss"], "pss": raw["Pss"],
            "uss": raw["Private_Clean"] + raw["Private_Dirty"], "anon": raw["Anonymous"],
            "weights": mapped_weights_mib(pid)}


def mapped_weights_mib(pid: int) -> float:
    """Resident MiB of memory-mapped model weight files (``*.onnx.data``): page cache."""
    total_kib, in_weights = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            in_weights = line.endswith(".onnx.data")
        elif in_weights and first == "Rss:":
            total_kib += int(line.split()[1])
    return total_kib / 1024


def snapshot(gateway: int, worker: int) -> dict[str, dict[str, float]]:
    both = {"gateway": memory_mib(gateway), "worker": memory_mib(worker)}
    both["total"] = {k: both["gateway"][k] + both["worker"][k] for k in both["gateway"]}
    return both


def one_start(tree: Path, config: Path, key: str, feed: Feed, args: argparse.Namespace
              ) -> dict[str, object]:
    port = free_port()
    env = {**ADMIN_ENV, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
        cwd=tree, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Polled every 5 ms from process start: the cold start's resolution.
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz", poll_s=0.005, timeout_s=60.0))
        cold_s = time.perf_counter() - started
        worker = worker_pid(proc.pid)
        idle = snapshot(proc.pid, worker)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        latencies = asyncio.run(load(url, key, "auto", feed, args.concurrency, math.inf,
                                     count=args.requests))
        loaded = snapshot(proc.pid, worker)
        time.sleep(args.quiet_s)  # the figure itself: memory once the load has stopped
        quiet = snapshot(proc.pid, worker)
        return {"cold_s": cold_s, "idle": idle, "loaded": loaded, "quiet": quiet,
                "requests": len(latencies),
                "p50_ms": statistics.median(latencies)}
    finally:
        stop(proc)


def report(tree: Path, runs: list[dict[str, object]]) -> None:
    def med(phase: str, proc: str, field: str) -> float:
        return statistics.median(r[phase][proc][field] for r in runs)  # type: ignore[index]

    cold = statistics.median(float(r["cold_s"]) for r in runs)  # type: ignore[arg-type]
    print(f"\n{tree}  (median of {len(runs)} starts; cold start {cold:.2f} s; "
          f"{runs[0]['requests']} auto requests each)")
    print("| phase | process | RSS MiB | PSS MiB | USS MiB | anonymous MiB | mapped weights MiB |")
    print("|---|---|---|---|---|---|---|")
    for phase in ("idle", "loaded", "quiet"):
        for proc in ("gateway", "worker", "total"):
            cells = " | ".join(f"{med(phase, proc, f):.0f}" for f in FIGURES)
            print(f"| {phase} | {proc} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quiet-s", type=float, default=3.0,
                        help="how long after the load the last snapshot is taken")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data",
                        help="the shared data folder the unique prompts are drawn from")
    parser.add_argument("--cache", action="store_true",
                        help="the semantic cache on, as in the default configuration")
    parser.add_argument("--tree", type=Path, action="append",
                        help="a checkout of the repository to run (repeatable; default: this one)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    texts = unique_prompts(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    up_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port)])
    feed = Feed(texts)
    runs: dict[Path, list[dict[str, object]]] = {tree: [] for tree in trees}
    try:
        wait_port(up_port)
        config = tmp / "gateway.toml"
        text = gateway_config(up_port, str(tmp / "data"))
        if args.cache:  # the default configuration's cache: its index and typo folding loaded
            text = text.replace("[cache]\nenabled = false", "[cache]\nenabled = true")
        config.write_text(text)
        key = create_key(config)
        for _ in range(args.rounds):
            for tree in trees:
                runs[tree].append(one_start(tree, config, key, feed, args))
    finally:
        stop(upstream)
    for tree in trees:
        report(tree, runs[tree])
    print(f"\nunique prompts sent: {feed.next:,}; headers {sorted(BYPASS)} bypass the cache")


if __name__ == "__main__":
    main()
