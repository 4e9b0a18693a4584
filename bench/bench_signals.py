"""What the routing signal store costs per routed request: queueing its two signals on the event
loop, and writing them (with the prompt's vector) in the store's batches.

    PYTHONPATH=TREE .venv/bin/python bench/bench_signals.py [--stored 0,100000]
        [--requests 5000] [--rounds 3]

Every ``auto`` request queues a ``decision`` signal with the prompt's vector and an ``answer``
signal (``gateway/routing/signals.py``); the store's task writes the queue in batches of 256, in
one transaction each, on aiosqlite's thread. Here a real store (a temporary SQLite file) first
holds ``--stored`` vectors already, written the same way; then each round queues
``--requests`` requests' signals, with fresh 384-dimension vectors, and writes them. Reported per
request: the loop's CPU to queue them, and the process's CPU to write them (the writing thread
and the loop's side of it), medians of the rounds. ``PYTHONPATH`` picks the checkout measured,
so two builds run the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.routing.policy import Decision, Reason, RouteScore
from gateway.routing.signals import Answered, SignalStore, prompt_key

DECISION = Decision("code", "reasoning", Reason.CONFIDENT, "confidence 0.9 >= 0.8",
                    confidence=0.9, score=0.7, margin=0.2,
                    ranked=(RouteScore("code", "reasoning", 0.7, 0.6, 0.9),
                            RouteScore("factual", "cheap", 0.5, 0.4, 0.9)))


class Prompts:
    """Distinct prompts with unit vectors, made ahead so that making them is not measured."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.made = 0

    def take(self, n: int) -> tuple[list[str], np.ndarray]:
        vectors = self.rng.standard_normal((n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [f"prompt {self.made + i}: how do I sort a list in place?" for i in range(n)]
        self.made += n
        return texts, vectors


def queue(store: SignalStore, texts: list[str], vectors: np.ndarray) -> None:
    """What a routed request queues: its decision with the vector, then its answer."""
    for i, text in enumerate(texts):
        request_id = f"req_{text.split(':')[0]}"
        store.decision(request_id, DECISION, text, vectors[i])
        store.answer(Answered(request_id, "acme", "reasoning", "code", vectors[i],
                              prompt_key(text)))


async def measure(stored: int, requests: int, rounds: int) -> tuple[float, float]:
    """Median µs per request: queueing on the loop, and writing."""
    prompts = Prompts(seed=stored)
    with tempfile.TemporaryDirectory(prefix="bench-signals-") as tmp:
        store = await SignalStore.open(Path(tmp) / "signals.sqlite3", model="m",
                                       max_pending=10**9)
        try:
            for start in range(0, stored, 10_000):
                queue(store, *prompts.take(min(10_000, stored - start)))
                await store.flush()
            queued, written = [], []
            for _ in range(rounds):
                texts, vectors = prompts.take(requests)
                t0 = time.thread_time()
                queue(store, texts, vectors)
                t1 = time.process_time()
                await store.flush()
                t2 = time.process_time()
                queued.append((time.thread_time() - t0) * 1e6 / requests)
                written.append((t2 - t1) * 1e6 / requests)
        finally:
            await store.close()
    return statistics.median(queued), statistics.median(written)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored", default="0,100000",
                        help="vectors already stored, or a comma-separated list")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| vectors stored | queue, loop µs/request | write, µs/request | total |")
    print("|---|---|---|---|")
    for stored in (int(n) for n in args.stored.split(",")):
        queued, written = asyncio.run(measure(stored, args.requests, args.rounds))
        print(f"| {stored:,} | {queued:.1f} | {written:.1f} | {queued + written:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
