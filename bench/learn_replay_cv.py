"""Choose the learned policy's quality target and calibration window on TRAINING streams only.

Replays ``bench/out/mmlu_train.jsonl`` and ``bench/out/gsm8k_train.jsonl`` (never the test
files) through the gateway's ``Learner`` and ``LearnedPolicy`` as ``gateway learn replay`` does
(30% feedback, cold start, the packaged intent routes as the prior), for each setting in the
grid and seeds 0-2, and prints each run's second-half reasoning share and quality relative to
always-reasoning. The shipped setting is the one with the lowest mean second-half share among
those whose every training run kept at least 95% quality over its second half.

    python bench/learn_replay_cv.py [--targets 0.95 0.96 0.97] [--windows 500]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from gateway.core.config import load
from gateway.core.routing_settings import tier_plan
from gateway.routing.cli import embedder_for, router_for, workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy, tier_costs
from gateway.routing.learned.replay import read_labelled, replay

STREAMS = ("mmlu_train", "gsm8k_train")
SEEDS = (0, 1, 2)


async def main_async(args: argparse.Namespace) -> None:
    config = load(None)
    ws = workspace(SimpleNamespace(routes=None, cache=None, model_dir=None), config)
    plan = tier_plan(ws.routing, ws.tiers)
    router = await router_for(ws, embedder_for(ws))
    costs = tier_costs(config.models)
    data = {}
    for name in STREAMS:
        items = read_labelled(Path(f"bench/out/{name}.jsonl"))
        data[name] = (items, await labelled_vectors(ws, items))
    results = []
    for target, window in itertools.product(args.targets, args.windows):
        settings = replace(ws.routing.learning, quality_target=target, calibration_window=window)
        runs = []
        for name, seed in itertools.product(STREAMS, SEEDS):
            items, vectors = data[name]
            policy = LearnedPolicy(router.policy, Learner(settings), plan, settings, costs,
                                   seed=seed)
            half = replay(items, vectors, policy, router.route, feedback_rate=0.3, seed=seed,
                          costs=costs).second_half
            runs.append((name, seed, half.strong_share, half.quality))
            print(f"target {target} window {window} {name} seed {seed}: second half share "
                  f"{half.strong_share:.3f} quality {half.quality:.3f}", flush=True)
        ok = all(q >= 0.95 for _, _, _, q in runs)
        share = statistics.mean(s for _, _, s, _ in runs)
        results.append((not ok, share, target, window))
        print(f"target {target} window {window}: all >= 95%: {ok}; mean share {share:.3f}",
              flush=True)
    failed, share, target, window = min(results)
    if failed:
        print(f"no setting kept 95% in every run; lowest mean share: quality_target {target} "
              f"calibration_window {window} ({share:.3f})")
    else:
        print(f"chosen: quality_target {target} calibration_window {window} "
              f"(mean share {share:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.96, 0.97])
    parser.add_argument("--windows", type=int, nargs="+", default=[500])
    parser.add_argument("--no-bias", action="store_true",
                        help="ablation: decide on the raw estimates (no bias correction)")
    args = parser.parse_args()
    if args.no_bias:
        Learner.bias = lambda self, tier: 0.0  # type: ignore[method-assign]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
