"""Choose the learned policy's settings on TRAINING streams only.

Replays ``bench/out/mmlu_train.jsonl`` and ``bench/out/gsm8k_train.jsonl`` (never the test
files) through the gateway's ``Learner`` and ``LearnedPolicy`` as ``gateway learn replay`` does
(30% feedback, cold start, the packaged intent routes as the prior), for each setting in the
grid (quality target x calibration window x uncertainty margin x bias correction on/off x
the band of decisions the bias is measured on x what the target multiplies: the best estimate or
the prior, or the gain criterion x neighbours k x the weight share of outcomes observed after an
escalation x the exploration share x the similarity ``anchor``), on each whole stream with
``--seeds`` and, so that one ordering of one mix does not decide, on two sub-streams of the MMLU
training stream (its subjects, sorted by name, taken alternately: whole subjects, the stream's
order kept) with ``--sub-seeds``.
It prints each run's second-half
reasoning share and quality relative to always-reasoning.

The rule, fixed before any run: the chosen setting is the one with the lowest mean second-half
share among those whose EVERY training run kept at least 95% quality over its second half;
if none did, the one whose worst run's quality is highest (ties to the lower mean share).

    python bench/learn_replay_cv.py [--targets 0.9] [--windows 0] [--margins 0 1]
        [--bias on off] [--bias-bands 0 0.05] [--relative-to best prior gain] [--ks 32 64]
        [--escalated-weights 0 1] [--explore-shares 0.02] [--anchors 0 0.6]
        [--seeds 0 1 2 3 4] [--sub-seeds 0 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from gateway.core.config import load
from gateway.core.routing_settings import LEARNING_REFERENCES, LearningSettings, tier_plan
from gateway.routing.classifier import FloatArray
from gateway.routing.cli import Workspace, embedder_for, router_for, workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy, tier_costs
from gateway.routing.learned.replay import Labelled, read_labelled, replay

STREAMS = ("mmlu_train", "gsm8k_train")
QUALITY = 0.95


@dataclass(frozen=True, slots=True)
class Stream:
    name: str
    items: list[Labelled]
    vectors: FloatArray
    seeds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Scored:
    worst_quality: float
    mean_share: float
    label: str

    @property
    def kept(self) -> bool:
        return self.worst_quality >= QUALITY


def sub_streams(name: str, items: Sequence[Labelled], vectors: FloatArray,
                seeds: tuple[int, ...]) -> list[Stream]:
    """Two streams of whole subjects (sorted names taken alternately), in the stream's order."""
    groups = sorted({i.group for i in items if i.group is not None})
    out = []
    for part in (0, 1):
        mine = set(groups[part::2])
        keep = [n for n, i in enumerate(items) if i.group in mine]
        out.append(Stream(f"{name}/subjects{part}", [items[n] for n in keep],
                          vectors[keep], seeds))
    return out


async def streams(args: argparse.Namespace, ws: Workspace) -> list[Stream]:
    out = []
    for name in STREAMS:
        items = read_labelled(Path(f"bench/out/{name}.jsonl"))
        vectors = await labelled_vectors(ws, items)
        out.append(Stream(name, items, vectors, tuple(args.seeds)))
        if name.startswith("mmlu") and args.sub_seeds:
            out += sub_streams(name, items, vectors, tuple(args.sub_seeds))
    return out


def score(label: str, settings: LearningSettings, data: list[Stream], ctx: SimpleNamespace
          ) -> Scored:
    """Every run of one setting; prints each."""
    runs = []
    for stream in data:
        for seed in stream.seeds:
            policy = LearnedPolicy(ctx.router.policy, Learner(settings), ctx.plan, settings,
                                   ctx.costs, seed=seed)
            half = replay(stream.items, stream.vectors, policy, ctx.router.route,
                          feedback_rate=0.3, seed=seed, costs=ctx.costs).second_half
            runs.append((half.strong_share, half.quality))
            print(f"{label} {stream.name} seed {seed}: second half share "
                  f"{half.strong_share:.3f} quality {half.quality:.3f}", flush=True)
    scored = Scored(min(q for _, q in runs), statistics.mean(s for s, _ in runs), label)
    print(f"{label}: worst quality {scored.worst_quality:.3f}, all >= 95%: {scored.kept}; "
          f"mean share {scored.mean_share:.3f}", flush=True)
    return scored


async def main_async(args: argparse.Namespace) -> None:
    config = load(None)
    ws = workspace(argparse.Namespace(routes=None, cache=None, model_dir=None), config)
    plan = tier_plan(ws.routing, ws.tiers)
    ctx = SimpleNamespace(router=await router_for(ws, embedder_for(ws)), plan=plan,
                          costs=tier_costs(config.models))
    data = await streams(args, ws)
    results = []
    for (target, window, margin, bias, band, relative, k, escalated, explore,
         anchor) in itertools.product(
        args.targets, args.windows, args.margins, args.bias, args.bias_bands, args.relative_to,
        args.ks, args.escalated_weights, args.explore_shares, args.anchors,
    ):
        settings = replace(ws.routing.learning, quality_target=target,
                           calibration_window=window, margin=margin,
                           bias_correction=bias == "on", bias_band=band, relative_to=relative,
                           k=k, escalated_weight=escalated, explore_share=explore,
                           anchor=anchor)
        label = (f"target {target} window {window} margin {margin} bias {bias} band {band} vs "
                 f"{relative} k {k} escalated {escalated} explore {explore} anchor {anchor}")
        results.append(score(label, settings, data, ctx))
    kept = [r for r in results if r.kept]
    if kept:
        best = min(kept, key=lambda r: r.mean_share)
        print(f"chosen: {best.label} (mean share {best.mean_share:.3f})")
    else:
        best = min(results, key=lambda r: (-r.worst_quality, r.mean_share))
        print(f"no setting kept 95% in every run; highest worst quality: {best.label} "
              f"({best.worst_quality:.3f}, mean share {best.mean_share:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9])
    parser.add_argument("--windows", type=int, nargs="+", default=[0])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0])
    parser.add_argument("--bias", choices=("on", "off"), nargs="+", default=["on"])
    parser.add_argument("--bias-bands", type=float, nargs="+", default=[0.0],
                        help="measure the bias only on decisions this close to the threshold")
    parser.add_argument("--relative-to", choices=LEARNING_REFERENCES, nargs="+",
                        default=["best"])
    parser.add_argument("--escalated-weights", type=float, nargs="+", default=[0.0],
                        help="weight share of outcomes observed after an escalation")
    parser.add_argument("--explore-shares", type=float, nargs="+", default=[0.02],
                        help="share of decisions sent to another tier than the estimate picks")
    parser.add_argument("--ks", type=int, nargs="+", default=[64],
                        help="neighbours per estimate")
    parser.add_argument("--anchors", type=float, nargs="+", default=[0.0],
                        help="similarity below which even the nearest neighbour counts less")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sub-seeds", type=int, nargs="*", default=[0, 1])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
