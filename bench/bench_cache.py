"""Semantic cache lookup latency (embedding excluded) and memory at 100,000 entries.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_cache.py [--entries 100000] [--queries 2000]
        [--no-fold]

Builds (once; reused from ``bench/out/bench_cache/`` afterwards) a cache of ``--entries`` entries
in one namespace and context, then
reopens it as the gateway would (SQLite rows into memory, the saved hnswlib graph loaded) and times
``SemanticCache.lookup`` one call at a time (after folding the text's typos, as the pipeline does)
for exact hits, semantic hits (a paraphrased text with a vector at cosine ~0.97 to its entry; the
guards run) and misses (a random vector). Memory is the process's resident size before and after
the reopen (which loads the typo-folding word list). Opening is timed twice: until ``open``
returns (the gateway's start waits on this) and until every stored text has its typo key
(``typo_keys_s``, made in the background after ``open``), with ``EARLY`` semantic lookups
timed as soon as ``open`` returns (``semantic_hit_right_after_open``); meanwhile a ticker asks
the event loop for a turn every millisecond and records how late each turn came
(``loop_lag_ms``: how long the loop was held while the cache opened, before any request could
reach it, and after, while it keyed its texts and served the early lookups).

Vectors (384 dimensions, the default model's): ``--vectors real`` (default) takes the QQP dev
sentences' real embeddings (``bench/out/qqp_pairs_dev_vectors.jsonl``, made by ``eval_cache.py``)
and fills up to ``--entries`` with mixtures of two of them plus a little noise, so the index sees
the clustered, low-dimensional structure of sentence embeddings; ``--vectors random`` uses
uniformly random unit vectors, a worst case for any graph index (no structure at all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.cli import read_vector_file  # noqa: E402
from gateway.cache.index import FloatArray, VectorSpace  # noqa: E402
from gateway.cache.semantic_cache import SemanticCache  # noqa: E402
from gateway.core.cache_settings import CacheSettings  # noqa: E402

SPACE = VectorSpace("bench", 384)
REAL_VECTORS = ROOT / "bench/out/qqp_pairs_dev_vectors.jsonl"
NAMESPACE, CONTEXT = "tenant:bench", "bench-context"
EARLY = 300  # semantic lookups timed as soon as the cache has opened
ANSWER = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "A typical answer of a few sentences. " * 12}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 120, "total_tokens": 140},
}


def stored_text(i: int) -> str:
    return f"How do I configure the service number {i} on my server?"


def asked_text(i: int) -> str:
    return f"How can I configure the service number {i} on my server?"


def vectors(count: int, seed: int) -> FloatArray:
    v = np.random.default_rng(seed).standard_normal((count, SPACE.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def real_derived(count: int, seed: int) -> FloatArray:
    real = np.stack(list(read_vector_file(REAL_VECTORS).values())).astype(np.float32)
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(real), count), rng.integers(0, len(real), count)
    v = real[first] + 0.6 * real[second]
    v += rng.standard_normal(v.shape).astype(np.float32) * 0.02
    v[: min(count, len(real))] = real[:count]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: FloatArray, seed: int) -> FloatArray:
    """Vectors at cosine ~0.97 to ``v``."""
    noise = vectors(len(v), seed) * 0.25
    out = v + noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class LoopLag:
    """How late the event loop gives a 1 ms ticker its turn: the loop held by something else."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags_ms.append((time.perf_counter() - started) * 1000 - 1.0)

    def split(self) -> dict[str, float]:
        """The lags so far (p50, p99, max), and a fresh count from here."""
        lags, self.lags_ms = np.array(self.lags_ms or [0.0]), []
        return {"p50": round(float(np.percentile(lags, 50)), 2),
                "p99": round(float(np.percentile(lags, 99)), 2),
                "max": round(float(lags.max()), 1)}

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.split()


async def reopen(settings: CacheSettings, early: list[tuple[str, FloatArray | None]]
                 ) -> tuple[SemanticCache, dict[str, object]]:
    """Open as the gateway does, timing ``open``, then ``early`` lookups made at once (while a
    build that keys texts in the background still does), then the wait for every typo key."""
    lag = LoopLag()
    lag.start()
    started = time.perf_counter()
    cache = await SemanticCache.open(settings, SPACE)
    open_s = time.perf_counter() - started
    during_open = lag.split()
    pending = cache.stats().get("typo_keys_pending", 0)
    first = await timed(cache, early)
    while cache.stats().get("typo_keys_pending", 0):
        await asyncio.sleep(0.01)
    keyed_s = time.perf_counter() - started
    return cache, {"open_s": round(open_s, 2), "typo_keys_s": round(keyed_s, 2),
                   "typo_keys_pending_at_open": pending,
                   "loop_lag_ms": {"during_open": during_open, "after_open": await lag.stop()},
                   "semantic_hit_right_after_open": first}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def build(settings: CacheSettings, entries: int, stored: FloatArray) -> float:
    started = time.perf_counter()
    cache = await SemanticCache.open(settings, SPACE)
    for i in range(entries):
        await cache.store(NAMESPACE, CONTEXT, stored_text(i), stored[i], ANSWER)
        if i % 5000 == 4999:  # keep the write queue bounded while loading
            await cache.flush()
    await cache.close()
    return time.perf_counter() - started


async def timed(cache: SemanticCache,
                queries: list[tuple[str, FloatArray | None]]) -> dict[str, float]:
    """Latency percentiles of one lookup at a time, and the share of lookups that hit."""
    times, hits = [], 0
    for text, vector in queries:
        started = time.perf_counter_ns()
        # as the pipeline does: the text folded to embed it (the embedding is not timed here),
        # then looked up as sent (the cache reads the fold from its memo)
        cache.key_text(text)
        hit = await cache.lookup(NAMESPACE, CONTEXT, text, vector, "semantic")
        times.append((time.perf_counter_ns() - started) / 1e6)
        hits += hit is not None
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "mean_ms": round(float(np.mean(times)), 3),
            "hit_share": round(hits / len(queries), 4)}


async def run(entries: int, queries: int, kind: str, ef_search: int,
              fold_typos: bool = True) -> dict[str, object]:
    stored = real_derived(entries, seed=1) if kind == "real" else vectors(entries, seed=1)
    # the vectors file grows as other scripts embed more texts: a cache built from other vectors
    # would answer none of the near copies, so each set of vectors gets its own
    digest = hashlib.sha256(stored.tobytes()).hexdigest()[:10]
    directory = ROOT / "bench/out/bench_cache" / f"{kind}-{entries}-{digest}"
    settings = replace(CacheSettings(), database=directory / "cache.sqlite3",
                       index_dir=directory / "index", threshold=0.95, max_entries=entries,
                       max_pending=10_000, ttl_s=0.0,
                       index=replace(CacheSettings().index, ef_search=ef_search),
                       fold_typos=fold_typos)
    build_s = None
    if not settings.database.exists():
        build_s = await build(settings, entries, stored)
    pick = np.random.default_rng(2).choice(entries, queries, replace=False)
    close = near(stored[pick], seed=3)
    early = [(asked_text(int(i)), close[n]) for n, i in enumerate(pick[:EARLY])]
    before = rss_mb()
    cache, opening = await reopen(settings, early)
    after = rss_mb()
    try:
        for i in pick[:200]:  # warm up the thread pool and SQLite's page cache
            await cache.lookup(NAMESPACE, CONTEXT, stored_text(int(i)), None, "semantic")
        exact = await timed(cache, [(stored_text(int(i)), None) for i in pick])
        semantic = await timed(cache, [(asked_text(int(i)), close[n])
                                       for n, i in enumerate(pick)])
        misses = await timed(cache, [(f"unrelated question {n}", v)
                                     for n, v in enumerate(vectors(queries, seed=4))])
        stats = cache.stats()
    finally:
        await cache.close()
    return {
        "entries": entries, "queries": queries, "vectors": kind, "ef_search": ef_search,
        "fold_typos": fold_typos,
        "build_s": build_s, **opening,
        "exact_hit": exact, "semantic_hit": semantic, "miss": misses,
        "rss_mb_before_open": round(before, 1), "rss_mb_after_open": round(after, 1),
        "index_mb": round(int(str(stats["index_bytes"])) / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--vectors", choices=("real", "random"), default="real")
    parser.add_argument("--ef-search", type=int, default=CacheSettings().index.ef_search)
    parser.add_argument("--no-fold", dest="fold_typos", action="store_false",
                        help="without typo folding ([cache] fold_typos = false)")
    args = parser.parse_args()
    report = asyncio.run(run(args.entries, args.queries, args.vectors, args.ef_search,
                             args.fold_typos))
    out = ROOT / f"bench/out/bench_cache-{args.vectors}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
