"""Where the online limit of the learned policy lies, on TRAINING streams only.

For each stream (``bench/out/{mmlu,gsm8k}_train.jsonl``; never the test files) and seed, the
second half of the stream is scored five ways, each as the reasoning-tier share needed for 95%
of always-reasoning quality on those prompts (the best cut of a ranking), except the last:

- ``oracle``: the prompts ranked by their true gain (reasoning right, cheap wrong first): the
  least any router could need; ``random``: a random router's share (no ranking at all);
- ``all outcomes``: the learner trained on every outcome of both tiers of the first half (as
  ``gateway learn eval`` learns a training file), ranking by the policy's criterion: the
  estimator's limit with full information from the same prompts;
- ``30% of both``: the same from a random 30% of the first half's prompts, both tiers: as much
  data as 30% feedback returns, but without the policy choosing which tier is observed;
- ``as replayed``: the learner as the online replay left it at mid-stream (30% feedback of the
  tier it served, escalations), ranking with the intent prior as the policy does: what the
  policy's data allows, with the cut chosen in hindsight;
- ``online``: the replay's own second half, share at the quality it got (the threshold fixed
  in advance): the policy.

Beside them, how far the reasoning tier's estimate ran from what happened on the second half's
prompts where it rested on nearby reasoning outcomes (mean estimate less the share the reasoning
tier got right): the escalation bias this round removes shows as a negative figure with
``--escalated-weight 1``. And on the second half's prompts the policy sent to the cheap tier:
the cheap estimate it decided with less the cheap tier's accuracy there, and the quality it
expected to give up per prompt against what it gave up (what a calibrated threshold has to get
right), beside ``Learner.bias`` of the cheap tier at the end (what ``bias_correction`` adds:
outcome less the estimate decided with, recency-weighted over the whole stream, so about the
negative of the cheap-routed figure where the measure is right).

    python bench/learn_limits.py [--seeds 0 1 2] [--streams gsm8k_train mmlu_train]
        [--quality-target Q --relative-to R --escalated-weight W]
        [--bias-correction on|off --bias-band B]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from gateway.core.config import load
from gateway.core.routing_settings import LEARNING_REFERENCES, LearningSettings, tier_plan
from gateway.routing.classifier import FloatArray
from gateway.routing.cli import embedder_for, router_for, workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy, tier_costs, tier_prior
from gateway.routing.learned.replay import (
    Labelled,
    cheap_ratio,
    learn_all,
    random_share,
    read_labelled,
    replay,
    share_for_95,
)
from gateway.routing.policy import Decision, LearnedNote

TIERS = ("cheap", "reasoning")


def share95(score: FloatArray, items: list[Labelled]) -> float:
    weak = np.array([i.outcomes[TIERS[0]] for i in items], dtype=np.float64)
    strong = np.array([i.outcomes[TIERS[1]] for i in items], dtype=np.float64)
    return share_for_95(score, weak, strong)


def offline(settings: LearningSettings, items: list[Labelled], vectors: FloatArray,
            test: list[Labelled], test_vectors: FloatArray) -> float:
    learner = Learner(settings, clock=lambda: 0.0)
    learn_all(learner, items, vectors, TIERS)
    return share95(cheap_ratio(learner, test_vectors, TIERS), test)


def limits(name: str, items: list[Labelled], vectors: FloatArray, seed: int,
           settings: LearningSettings, ctx: SimpleNamespace) -> str:
    half = len(items) // 2
    first, second = items[:half], items[half:]
    gain = np.array([i.outcomes[TIERS[1]] - i.outcomes[TIERS[0]] for i in second], np.float32)
    oracle = share95(-gain, second)
    chance = random_share(float(np.mean([i.outcomes[TIERS[0]] for i in second])),
                          float(np.mean([i.outcomes[TIERS[1]] for i in second])))
    full = offline(settings, first, vectors[:half], second, vectors[half:])
    picked = sorted(random.Random(seed).sample(range(half), round(0.3 * half)))
    sampled = offline(settings, [first[i] for i in picked], vectors[picked], second,
                      vectors[half:])

    def policy() -> Recording:
        return Recording(ctx.router.policy, Learner(settings), ctx.plan, settings,
                         ctx.costs, seed=seed)

    mid = policy()  # the first half replayed alone draws the same feedback as the whole run
    replay(first, vectors[:half], mid, ctx.router.route, feedback_rate=0.3, seed=seed,
           costs=ctx.costs)
    priors = [tier_prior(ctx.plan, TIERS, ctx.router.route(v).tier, settings.quality_target)
              for v in vectors[half:]]
    replayed = share95(cheap_ratio(mid.learner, vectors[half:], TIERS, priors), second)
    whole = policy()
    online = replay(items, vectors, whole, ctx.router.route, feedback_rate=0.3, seed=seed,
                    costs=ctx.costs).second_half
    bias = estimate_bias(whole.notes[half:], second)
    selected = cheap_selected(whole.notes[half:], whole.tiers[half:], second)
    return (f"{name} seed {seed}: share for 95% on the second half: oracle {oracle:.3f}, "
            f"random {chance:.3f}, "
            f"all outcomes {full:.3f}, 30% of both {sampled:.3f}, as replayed {replayed:.3f}; "
            f"online {online.strong_share:.3f} at quality {online.quality:.3f}; reasoning "
            f"estimate - outcome {bias}; {selected}; learner.bias (outcome - decided) at the "
            f"end: cheap {whole.learner.bias(TIERS[0]):+.3f}, reasoning "
            f"{whole.learner.bias(TIERS[1]):+.3f}")


class Recording(LearnedPolicy):
    """The learned policy, keeping each decision's note (None: the intent decision stood)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notes: list[LearnedNote | None] = []
        self.tiers: list[str] = []

    def refine(self, intent: Decision, vector: FloatArray, tenant: str | None = None, *,
               may_explore: bool = True) -> Decision:
        decision = super().refine(intent, vector, tenant, may_explore=may_explore)
        self.notes.append(decision.learned)
        self.tiers.append(decision.tier)
        return decision


def estimate_bias(notes: list[LearnedNote | None], items: list[Labelled]) -> str:
    """Mean reasoning estimate less the reasoning tier's accuracy, over the prompts whose
    estimate rested on nearby reasoning outcomes (and how many)."""
    pairs = [(e.p, float(i.outcomes[TIERS[1]])) for n, i in zip(notes, items, strict=True)
             if n is not None and (e := n.estimate(TIERS[1])) is not None and e.count > 0]
    if not pairs:
        return "n/a (no prompt)"
    estimate, right = np.mean(pairs, axis=0)
    return f"{estimate - right:+.3f} over {len(pairs)}"


def cheap_selected(notes: list[LearnedNote | None], tiers: list[str],
                   items: list[Labelled]) -> str:
    """On the prompts the learned decision sent to the cheap tier (not explored): the cheap
    estimate it decided with less the cheap tier's accuracy there (its bias where it is
    chosen), and the quality it expected to give up per prompt (reasoning estimate less cheap)
    against what was given up (reasoning right less cheap right, before any escalation)."""
    rows = [(c.p, r.p, float(i.outcomes[TIERS[0]]), float(i.outcomes[TIERS[1]]))
            for n, t, i in zip(notes, tiers, items, strict=True)
            if n is not None and not n.explored and t == TIERS[0]
            and (c := n.estimate(TIERS[0])) is not None and (r := n.estimate(TIERS[1])) is not None]
    if not rows:
        return "cheap-routed: none"
    cheap, strong, cheap_right, strong_right = np.mean(rows, axis=0)
    return (f"cheap-routed {len(rows)}: cheap estimate - outcome {cheap - cheap_right:+.3f}, "
            f"expected loss {strong - cheap:.3f} against {strong_right - cheap_right:.3f}")


async def main_async(args: argparse.Namespace) -> None:
    config = load(None)
    ws = workspace(argparse.Namespace(routes=None, cache=None, model_dir=None), config)
    overrides = {"quality_target": args.quality_target, "relative_to": args.relative_to,
                 "escalated_weight": args.escalated_weight, "bias_band": args.bias_band,
                 "bias_correction": (None if args.bias_correction is None
                                     else args.bias_correction == "on")}
    settings = replace(ws.routing.learning,
                       **{k: v for k, v in overrides.items() if v is not None})
    ctx = SimpleNamespace(router=await router_for(ws, embedder_for(ws)),
                          plan=tier_plan(ws.routing, ws.tiers), costs=tier_costs(config.models))
    print(f"settings: target {settings.quality_target}, vs {settings.relative_to}, "
          f"escalated weight {settings.escalated_weight}, k {settings.k}, bias correction "
          f"{settings.bias_correction}, band {settings.bias_band}", flush=True)
    for name in args.streams:
        items = read_labelled(Path(f"bench/out/{name}.jsonl"))
        vectors = await labelled_vectors(ws, items)
        for seed in args.seeds:
            print(limits(name, items, vectors, seed, settings, ctx), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", default=["gsm8k_train", "mmlu_train"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quality-target", type=float, default=None)
    parser.add_argument("--relative-to", choices=LEARNING_REFERENCES, default=None)
    parser.add_argument("--escalated-weight", type=float, default=None)
    parser.add_argument("--bias-band", type=float, default=None)
    parser.add_argument("--bias-correction", choices=("on", "off"), default=None)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
