"""Latency of one routing decision (the embedding excluded) with 15,000 utterances.

    python bench/clinc_to_jsonl.py       # once
    python bench/bench_routing.py [--queries 3000] [--repeat 3]

Routes: every CLINC150 train utterance (150 routes, 15,000 utterances, plus the 100
out-of-scope examples); queries: the CLINC150 val prompts, already embedded (vectors cached in
``bench/out/vectors.npz``). Times ``Router.route(vector)`` (scoring, confidence and policy),
one call at a time, after a warm-up pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from eval_routing import OUT, Vectors, make_routes, read, router_for  # noqa: E402


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    vec = Vectors()
    router = router_for(make_routes(read("clinc150_train")), vec)
    assert router.classifier is not None
    queries = vec([text for text, _ in read("clinc150_val")][: args.queries])
    for v in queries[:200]:
        router.route(v)
    timings_ms: list[float] = []
    for _ in range(args.repeat):
        for v in queries:
            start = time.perf_counter()
            router.route(v)
            timings_ms.append((time.perf_counter() - start) * 1000)
    print(f"routes: {len(router.routes.routes)}, utterances: {router.classifier.utterances} "
          f"(cache {OUT})")
    print(f"decisions: {len(timings_ms)}; p50 {percentile(timings_ms, 0.5):.3f} ms, "
          f"p90 {percentile(timings_ms, 0.9):.3f} ms, p99 {percentile(timings_ms, 0.99):.3f} ms, "
          f"mean {statistics.fmean(timings_ms):.3f} ms")


if __name__ == "__main__":
    main()
