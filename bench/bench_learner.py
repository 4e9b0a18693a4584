"""The learned policy's costs at full memory: decision time, learning steps, memory.

Fills a ``Learner`` (the configured ``[routing.learning]`` settings, ``max_outcomes`` outcomes,
100,000 by default) with outcomes of real prompt vectors (the RouteLLM prompts embedded by the
configured model, each reused with a little seeded noise to reach the count), then measures:

- the decision: ``LearnedPolicy.decide`` against the intent routes' ``ThresholdPolicy.decide``
  alone on the same evidence (p50/p99 of each and of the difference: what learning adds to a
  routed request); with ``--thrash-mb`` an array that size is rewritten before each decision,
  so the graph is as cold in the CPU caches as a gateway's request path leaves it;
- learning beside the event loop: ``--observe`` outcomes observed at once into the full memory
  (every one overwrites the oldest), folded by the background task in its worker thread while a
  ticker coroutine measures how long the loop was held between two of its turns, in wall time
  and in the loop thread's own CPU time (the figure that matters: what a request waiting on
  the loop would see, without the time the machine did not run the process at all); each
  outcome's fold is timed too, in wall time and in the worker thread's CPU time;
- memory: the resident size the memory adds in a fresh process fed from one array
  (``--memory-only``, run as a child), the learner's own count, and how much this process grew
  while filling (which also holds what the allocator kept of the feed's transient objects).

    python bench/bench_learner.py [--outcomes 100000] [--queries 2000] [--observe 5000]
        [--thrash-mb 16] [--k 32]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from gateway.core.config import load
from gateway.core.routing_settings import tier_plan
from gateway.routing.cli import embedder_for, router_for, workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner, Outcome, Source
from gateway.routing.learned.policy import LearnedPolicy, tier_costs
from gateway.routing.learned.replay import read_labelled

DATA = ("mmlu_train", "mmlu_test", "gsm8k_train", "gsm8k_test")


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def outcomes(base: np.ndarray, n: int, seed: int) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), n)]
    rows = rows + rng.normal(0, 0.02, rows.shape).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    tiers = rng.integers(0, 2, n)
    ok = rng.random(n) < 0.75
    return [Outcome(rows[i], ("cheap", "reasoning")[tiers[i]], float(ok[i]), 1.0,
                    1000.0 + i * 0.001, None, Source.REPLAY) for i in range(n)]


def ms(samples: list[float], at: int) -> str:
    return f"{statistics.quantiles(samples, n=100)[at] * 1000:.3f}"


def percentiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"p50 {q[49] * 1000:.3f} ms, p99 {q[98] * 1000:.3f} ms"


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    config = load(None)
    ws = workspace(argparse.Namespace(routes=None, cache=None, model_dir=None), config)
    plan = tier_plan(ws.routing, ws.tiers)
    items = [i for name in DATA for i in read_labelled(Path(f"bench/out/{name}.jsonl"))]
    base = await labelled_vectors(ws, items)
    router = await router_for(ws, embedder_for(ws))
    settings = replace(ws.routing.learning, enabled=True, max_outcomes=args.outcomes,
                       k=args.k or ws.routing.learning.k)
    clock = [2000.0]
    learner = Learner(settings, clock=lambda: clock[0])
    gc.collect()
    before = rss_mb()
    for start in range(0, args.outcomes, 5_000):  # small batches: little transient memory
        learner.learn(outcomes(base, min(5_000, args.outcomes - start), start))
    gc.collect()
    after = rss_mb()
    policy = LearnedPolicy(router.policy, learner, plan, settings, tier_costs(config.models))
    queries = base[np.random.default_rng(2).integers(0, len(base), args.queries)]
    intent_s, learned_s = [], []
    # Rewritten between decisions (--thrash-mb): the CPU caches as a request path leaves them.
    junk = np.ones(args.thrash_mb * 2**20 // 8)
    for vector in queries:
        evidence = router.evidence(vector)
        junk += 1.0
        t0 = time.perf_counter()
        router.policy.decide(evidence)
        t1 = time.perf_counter()
        policy.decide(evidence, vector, may_explore=True)
        t2 = time.perf_counter()
        intent_s.append(t1 - t0)
        learned_s.append(t2 - t1)
    added = [b - a for a, b in zip(intent_s, learned_s, strict=True)]
    steps = await learning_steps(learner, outcomes(base, args.observe, 3))
    report = {
        "outcomes": learner.stats().remembered,
        "dim": settings.dim, "k": settings.k, "thrash_mb": args.thrash_mb,
        "bench_process_grew_mb": round(after - before, 1),
        "learner_estimate_mb": round(learner.memory_bytes() / 2**20, 1),
        "intent_decide": percentiles(intent_s),
        "learned_decide": percentiles(learned_s),
        "added_by_learning": percentiles(added),
        **steps,
    }
    return report


async def learning_steps(learner: Learner, batch: list[Outcome]) -> dict[str, object]:
    """Observe ``batch`` at once; time the loop's longest hold and the longest step."""
    walls: list[float] = []
    cpus: list[float] = []
    fold = learner._fold  # timed from outside: one outcome's fold, in the worker thread

    def timed(outcomes: Sequence[Outcome], threads: int = 1, to_linear: bool = True) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        fold(outcomes, threads, to_linear)
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - t0)

    learner._fold = timed  # type: ignore[method-assign]
    await learner.start()
    gaps: list[float] = []
    cpu_gaps: list[float] = []  # the loop thread's own CPU between two turns: no preemption
    done = asyncio.Event()

    async def ticker() -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0)
            now, now_cpu = time.perf_counter(), time.thread_time()
            gaps.append(now - last)
            cpu_gaps.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    for o in batch:
        learner.observe(o)
    await learner.drained()
    elapsed = time.perf_counter() - t0
    done.set()
    await tick
    await learner.close()
    return {
        "observed": len(batch),
        "learn_rate_per_s": round(len(batch) / elapsed),
        "folds": len(walls),
        "fold_thread_cpu_ms": f"p50 {ms(cpus, 49)}, p99 {ms(cpus, 98)}, "
                              f"max {max(cpus) * 1000:.3f}",
        "fold_wall_ms": f"p50 {ms(walls, 49)}, p99 {ms(walls, 98)}, max {max(walls) * 1000:.3f}",
        "longest_loop_hold_ms": round(max(gaps) * 1000, 3),
        "longest_loop_hold_cpu_ms": round(max(cpu_gaps) * 1000, 3),
        "loop_hold_cpu_p99_ms": round(statistics.quantiles(cpu_gaps, n=100)[98] * 1000, 3),
        "loop_hold_p99_ms": round(statistics.quantiles(gaps, n=100)[98] * 1000, 3),
    }


def memory_only(n: int) -> dict[str, object]:
    """The learner's memory alone, in a process that holds nothing else: ``n`` outcomes of
    random unit vectors, fed from one array (no per-outcome Python objects to retain)."""
    settings = replace(load(None).routing.learning, max_outcomes=n)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    learner = Learner(settings, clock=lambda: 0.0)
    learner.learn([Outcome(x[0], "cheap", 1.0)])  # the projection and arrays exist from here
    gc.collect()
    before = rss_mb()
    for start in range(1, n, 1000):
        learner.learn(Outcome(v, "cheap", 1.0) for v in x[start:start + 1000])
    gc.collect()
    return {"outcomes": learner.stats().remembered, "dim": settings.dim,
            "memory_rss_mb": round(rss_mb() - before, 1),
            "memory_estimate_mb": round(learner.memory_bytes() / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--observe", type=int, default=5000)
    parser.add_argument("--thrash-mb", type=int, default=0,
                        help="rewrite this many MB between decisions (cold CPU caches)")
    parser.add_argument("--k", type=int, default=None, help="neighbours per estimate")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory of --outcomes outcomes (run in a fresh process)")
    args = parser.parse_args()
    if args.memory_only:
        print(json.dumps(memory_only(args.outcomes), indent=2))
        return
    fresh = subprocess.run(
        [sys.executable, __file__, "--memory-only", "--outcomes", str(args.outcomes)],
        check=True, capture_output=True, text=True,
    )
    report = asyncio.run(main_async(args))
    report.update(json.loads(fresh.stdout))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
