"""What handing an answer to the outcome feed costs the request path (gateway/routing/outcomes.py).

    .venv/bin/python bench/bench_outcomes.py [--answers 20000] [--tenants 20]

``OutcomeFeed.answered`` runs once per answered request, just before its last byte: it queues
an ``answer`` signal (and its vector), queues the learner's outcomes, checks the tenant's recent
answers for a quick retry (a matrix product over at most 64 vectors) and remembers the answer.
Here it runs on real prompt vectors (CLINC150's validation split, 384 dimensions), with a real
signal store (a temporary SQLite file, written by its own task) and a real learner whose queue
is folded between calls, spread over ``--tenants`` tenants so that each tenant's window is full.
Some prompts come back within the window, as retries do. Reported: p50 and p99 of one call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from procs import ROOT

from embedder_worker.model import OnnxEmbedder
from gateway.core.routing_settings import LearningSettings, OutcomeSettings
from gateway.routing.learned.learner import Learner
from gateway.routing.outcomes import OutcomeFeed
from gateway.routing.signals import Answered, SignalStore, prompt_key

DATA = next((p for p in (ROOT.parent / "shared/data", ROOT.parent.parent / "shared/data")
             if p.exists()), ROOT.parent / "shared/data")


async def run(answers: int, tenants: int) -> list[float]:
    texts = [t for t, _ in json.loads((DATA / "clinc150/val.json").read_text())["val"]]
    vectors = OnnxEmbedder(ROOT / "models" / "all-MiniLM-L6-v2").embed(texts)
    tmp = Path(tempfile.mkdtemp(prefix="bench-outcomes-"))
    store = await SignalStore.open(tmp / "signals.sqlite3", model="m", max_pending=100_000)
    store.start()
    learner = Learner(LearningSettings(enabled=True, queue=100_000))
    await learner.start()
    feed = OutcomeFeed(OutcomeSettings(), signals=store, learner=learner)
    rng = random.Random(3)
    took = []
    now = time.time()
    for i in range(answers):
        k = rng.randrange(len(texts)) if rng.random() > 0.05 else max(0, i % len(texts) - 1)
        answered = Answered(f"r{i}", f"t{i % tenants}", rng.choice(("cheap", "reasoning")),
                            "factual", vectors[k], prompt_key(texts[k]),
                            failed=(("cheap", "empty_answer"),) if rng.random() < 0.1 else (),
                            at_s=now + i * 0.01)
        started = time.perf_counter()
        feed.answered(answered)
        took.append((time.perf_counter() - started) * 1000)
        if i % 50 == 49:
            await learner.drained()  # the learner keeps up, as it does between requests
    await learner.close()
    await store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    took = asyncio.run(run(args.answers, args.tenants))
    q = statistics.quantiles(took, n=100)
    print(f"OutcomeFeed.answered: p50 {statistics.median(took) * 1000:.1f} us  "
          f"p99 {q[98] * 1000:.1f} us over {args.answers:,} answers, {args.tenants} tenants")


if __name__ == "__main__":
    main()
