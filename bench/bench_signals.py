"""What the routing signal store costs per routed request: queueing its two signals on the event
loop, and writing them (with the prompt's vector) in the store's batches.

    PYTHONPATH=TREE .venv/bin/python bench/bench_signals.py [--stored 0,100000]
        [--requests 5000] [--rounds 3] [--repeat 0.5] [--sweep]

Every ``auto`` request queues a ``decision`` signal with the prompt's vector and an ``answer``
signal (``gateway/routing/signals.py``); the store's task writes the queue in batches of 256, in
one transaction each, on aiosqlite's thread. Here a real store (a temporary SQLite file) first
holds ``--stored`` vectors already, written the same way; then each round queues
``--requests`` requests' signals, with fresh 384-dimension vectors, and writes them. Reported per
request: the loop's CPU to queue them, and the process's CPU to write them (the writing thread
and the loop's side of it), medians of the rounds. ``--repeat``: that share of each round's
requests ask a prompt already stored (its vector is written again: ignored, or its ts moved
forward). ``--sweep`` (a store with retention) adds what deleting them costs once they expire:
the process's CPU for one sweep of every row written, per request. ``PYTHONPATH`` picks the
checkout measured, so two builds run the same script.
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

    def take(self, n: int, repeat: float = 0.0) -> tuple[list[str], np.ndarray]:
        vectors = self.rng.standard_normal((n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        numbers = [int(self.rng.integers(self.made)) if self.made and self.rng.random() < repeat
                   else self.made + i for i in range(n)]
        self.made += n
        return [f"prompt {i}: how do I sort a list in place?" for i in numbers], vectors


def queue(store: SignalStore, texts: list[str], vectors: np.ndarray) -> None:
    """What a routed request queues: its decision with the vector, then its answer."""
    for i, text in enumerate(texts):
        request_id = f"req_{text.split(':')[0]}"
        store.decision(request_id, DECISION, text, vectors[i])
        store.answer(Answered(request_id, "acme", "reasoning", "code", vectors[i],
                              prompt_key(text)))


async def measure(stored: int, requests: int, rounds: int, repeat: float,
                  sweep: bool) -> tuple[float, float, float | None]:
    """Median µs per request: queueing on the loop, and writing; with ``sweep``, deleting."""
    prompts = Prompts(seed=stored)
    now = [time.time()]
    # Only a store with retention takes these (the code before it had none).
    retention = {"retention_s": 86_400.0, "clock": lambda: now[0]} if sweep else {}
    swept = None
    with tempfile.TemporaryDirectory(prefix="bench-signals-") as tmp:
        store = await SignalStore.open(Path(tmp) / "signals.sqlite3", model="m",
                                       max_pending=10**9, **retention)
        try:
            for start in range(0, stored, 10_000):
                queue(store, *prompts.take(min(10_000, stored - start)))
                await store.flush()
            queued, written = [], []
            for _ in range(rounds):
                texts, vectors = prompts.take(requests, repeat)
                t0 = time.thread_time()
                queue(store, texts, vectors)
                t1 = time.process_time()
                await store.flush()
                t2 = time.process_time()
                queued.append((time.thread_time() - t0) * 1e6 / requests)
                written.append((t2 - t1) * 1e6 / requests)
            if sweep:
                now[0] += 2 * 86_400.0
                t0 = time.process_time()
                deleted = await store.sweep()
                swept = (time.process_time() - t0) * 1e6 * 2 / deleted
        finally:
            await store.close()
    return statistics.median(queued), statistics.median(written), swept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored", default="0,100000",
                        help="vectors already stored, or a comma-separated list")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=float, default=0.0,
                        help="share of requests asking a prompt already stored")
    parser.add_argument("--sweep", action="store_true",
                        help="also measure deleting the rows once expired (needs retention)")
    args = parser.parse_args()
    print("| vectors stored | queue, loop µs/request | write, µs/request | total |"
          + (" sweep, µs/request |" if args.sweep else ""))
    print("|---|---|---|---|" + ("---|" if args.sweep else ""))
    for stored in (int(n) for n in args.stored.split(",")):
        queued, written, swept = asyncio.run(
            measure(stored, args.requests, args.rounds, args.repeat, args.sweep))
        print(f"| {stored:,} | {queued:.1f} | {written:.1f} | {queued + written:.1f} |"
              + (f" {swept:.1f} |" if swept is not None else ""), flush=True)


if __name__ == "__main__":
    main()
