"""What the learned policy adds to a routed request, end to end (c=1, two gateways side by side).

    .venv/bin/python bench/bench_learning_e2e.py [--requests 300] [--outcomes 100000]

Two gateway processes with their embedder workers, the shipped routes, the cache off, and the
same fast fake upstream (two tiers: ``cheap`` and ``reasoning``), one with ``[routing.learning]
enabled`` and its memory filled beforehand with ``--outcomes`` outcomes (real prompt vectors
from CLINC150's training split, both tiers, mixed verdicts, written through the learner's own
store so that the gateway restores them at start), the other without learning. Requests
alternate between the two, ``model: "auto"`` with distinct prompts (CLINC150's validation
split), so drift hits both alike. Every answer on the learning side also goes through the
outcome feed (retry check, signal, learner queue) just before its last byte.

Reported: p50/p99 latency of each side and the difference of the p50s (goal: at most 0.3 ms),
and ``Server-Timing``'s ``route`` stage p50 of each side (where the decision itself is spent).
``--no-learning-from-traffic`` sets every outcome weight to 0 on the learning side: it still
decides from its filled memory but learns (and writes) nothing, which separates the decision's
cost from the learning that follows each answer.
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

import aiohttp
import numpy as np
from bench_e2e import stage_ms
from bench_proxy import ADMIN_ENV, create_key, gateway_config
from procs import ROOT, free_port, start, stop, wait_port, wait_ready

from embedder_worker.model import OnnxEmbedder
from gateway.core.routing_settings import LearningSettings
from gateway.routing.learned.learner import Learner, Outcome

MODELS = ROOT / "models" / "all-MiniLM-L6-v2"
# ../shared/data beside the checkout (a worktree sits one folder deeper).
DATA = next((p for p in (ROOT.parent / "shared/data", ROOT.parent.parent / "shared/data")
             if p.exists()), ROOT.parent / "shared/data")


def config(up_port: int, data_dir: Path, learning: bool, outcomes: bool = True) -> str:
    """bench_proxy's full request path, with a reasoning tier and learning on or off."""
    weights = "" if outcomes else (
        "[routing.outcomes.weights]\nanswer = 0\nescalation = 0\nprovider_failure = 0\n"
        "client_retry = 0\nfeedback = 0\n")
    return gateway_config(up_port, str(data_dir)) + f"""[routing.learning]
enabled = {"true" if learning else "false"}
{weights}[[models]]
name = "bench-strong"
provider = "fake"
upstream_model = "bench-strong"
tier = "reasoning"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
"""


def clinc(split: str) -> list[str]:
    data = json.loads((DATA / "clinc150" / f"{split}.json").read_text())
    return [text for text, _ in data[split]]


async def fill_memory(path: Path, count: int) -> None:
    """``count`` outcomes on training prompts' vectors, written where the gateway restores."""
    texts = clinc("train")
    vectors = OnnxEmbedder(MODELS).embed(texts[:2000])
    rng = random.Random(7)
    noise = np.random.default_rng(7)
    now = time.time()
    learner = Learner(LearningSettings(enabled=True), path=path)
    await learner.start()
    batch = []
    for i in range(count):
        # Each prompt several times, a little apart, as real traffic repeats itself.
        v = vectors[i % len(vectors)] + noise.normal(0, 0.01, vectors.shape[1]).astype(
            np.float32)
        tier = "cheap" if rng.random() < 0.7 else "reasoning"
        batch.append(Outcome(v, tier, float(rng.random() < 0.8), 1.0,
                             now - rng.uniform(0, 86_400), None, "answer"))
    learner.learn(batch)
    await learner.close()


async def one(session: aiohttp.ClientSession, url: str, text: str) -> tuple[float, float | None]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    started = time.perf_counter()
    async with session.post(url, json=body) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
        elapsed = (time.perf_counter() - started) * 1000
        return elapsed, stage_ms(resp.headers.get("Server-Timing", ""), "route")


async def run(urls: dict[str, str], keys: dict[str, str], n: int) -> dict[str, list[float]]:
    texts = clinc("val")[:n]
    out: dict[str, list[float]] = {f"{side}{what}": [] for side in urls
                                   for what in ("", "_route")}
    sessions = {side: aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys[side]}"})
                for side in urls}
    try:
        for side, url in urls.items():  # warm both: first requests pay for lazy set-ups
            for text in texts[:10]:
                await one(sessions[side], url, text + " (warm-up)")
        for i, text in enumerate(texts):
            order = list(urls) if i % 2 == 0 else list(reversed(urls))
            for side in order:
                ms, route = await one(sessions[side], urls[side], text)
                out[side].append(ms)
                if route is not None:
                    out[f"{side}_route"].append(route)
    finally:
        for session in sessions.values():
            await session.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--no-learning-from-traffic", action="store_true",
                        help="the learning side decides but learns nothing from its answers "
                             "(every outcome weight 0): the decision's cost alone")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    asyncio.run(fill_memory(tmp / "learning" / "data" / "learning.sqlite3", args.outcomes))
    up_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port)])
    gateways, urls, keys = [], {}, {}
    try:
        wait_port(up_port)
        for side in ("intent", "learning"):
            cfg = tmp / side / "gateway.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(config(up_port, tmp / side / "data", side == "learning",
                                  not args.no_learning_from_traffic))
            keys[side] = create_key(cfg)
            port = free_port()
            gateways.append(start(["-m", "gateway", "serve", "--config", str(cfg),
                                   "--port", str(port)], env=ADMIN_ENV))
            wait_port(port, timeout_s=120)
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz"))
            urls[side] = f"http://127.0.0.1:{port}/v1/chat/completions"
        out = asyncio.run(run(urls, keys, args.requests))
    finally:
        for gateway in gateways:
            stop(gateway)
        stop(upstream)
    for name, values in out.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:15} p50 {statistics.median(values):6.3f} ms  p99 {q[98]:6.3f} ms")
    p50 = {k: statistics.median(v) for k, v in out.items()}
    print(f"learning - intent = {p50['learning'] - p50['intent']:.3f} ms at "
          f"{args.outcomes:,} remembered outcomes (goal: at most 0.3 ms); route stage "
          f"{p50['learning_route'] - p50['intent_route']:+.3f} ms")


if __name__ == "__main__":
    main()
