"""The ``gateway learn replay|eval`` commands: the learned policy measured on labelled prompts.

    gateway learn replay --data FILE [--feedback-rate 0.3] [--seed N] [--json OUT]
    gateway learn eval   --train FILE --test FILE [--json OUT]

Both drive the gateway's own ``Learner`` and ``LearnedPolicy`` with the ``[routing.learning]``
settings (``--quality-target``, ``--calibration-window``, ``--relative-to``, ``--margin``,
``--bias-correction``, ``--escalated-weight``, ``--explore-share``, ``--k`` and ``--sharpness``
override them), the costs of the configured models' prices, and the configured embedding model
in this process (the text the gateway would embed: ``head_and_tail`` of the prompt; vectors are
cached under the routing cache directory like ``gateway routes eval``'s). ``replay``'s prior is the
configured intent routes (``--prior routes``, what the gateway decides today) or the default
tier (``--prior default``). Reads the files it is given; writes only ``--json OUT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from gateway.core.config import Settings
from gateway.core.routing_settings import LEARNING_REFERENCES, LearningSettings, tier_plan
from gateway.core.toml_table import ConfigError
from gateway.routing.classifier import FloatArray
from gateway.routing.cli import (
    Common,
    Workspace,
    data_vectors,
    embedder_for,
    leaf,
    router_for,
    standalone,
    workspace,
)
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy, tier_costs
from gateway.routing.learned.replay import (
    EvalReport,
    Labelled,
    ReplayReport,
    evaluate,
    read_labelled,
    replay,
)
from gateway.routing.policy import Decision, Evidence, Policy, Reason, fallback
from gateway.routing.prompt import head_and_tail

Handler = Callable[[argparse.Namespace, Settings], int]


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: Common | None = None
) -> None:
    """Register ``learn replay|eval``; ``common`` adds shared options (``--config``)."""
    learn = subparsers.add_parser("learn", help="measure the learned routing policy")
    sub = learn.add_subparsers(dest="learn_command", required=True)
    rep = _leaf(sub, "replay", "stream labelled prompts through the learned policy",
                run_replay, common)
    rep.add_argument("--data", type=Path, required=True,
                     help='JSON lines: {"text": ..., "outcomes": {"cheap": true, ...}}')
    rep.add_argument("--feedback-rate", type=_share, default=0.3, metavar="R",
                     help="chance that a served answer's outcome comes back (default 0.3)")
    rep.add_argument("--seed", type=int, default=0, help="seed of feedback and exploration")
    rep.add_argument("--prior", choices=("routes", "default"), default="routes",
                     help="the cold-start decision: the intent routes or the default tier")
    ev = _leaf(sub, "eval", "learn from one labelled file, measure on another", run_eval, common)
    ev.add_argument("--train", type=Path, required=True, help="labelled JSON lines to learn")
    ev.add_argument("--test", type=Path, required=True, help="labelled JSON lines to score")


def _leaf(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
          handler: Handler, common: Common | None) -> argparse.ArgumentParser:
    parser = leaf(sub, name, help_text, handler, common)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the report as JSON to OUT")
    parser.add_argument("--quality-target", type=_share, default=None, metavar="Q")
    parser.add_argument("--explore-share", type=_share, default=None, metavar="E")
    parser.add_argument("--calibration-window", type=int, default=None, metavar="N",
                        help="decisions the threshold is calibrated over (0: fixed)")
    parser.add_argument("--relative-to", choices=LEARNING_REFERENCES, default=None,
                        help="what the quality target multiplies (gain: the shortfall allowed)")
    parser.add_argument("--escalated-weight", type=_share, default=None, metavar="W",
                        help="weight share of an outcome observed after an escalation")
    parser.add_argument("--margin", type=_non_negative, default=None, metavar="Z",
                        help="standard errors a cheaper tier's estimate must clear by")
    parser.add_argument("--bias-correction", choices=("on", "off"), default=None)
    parser.add_argument("--k", type=int, default=None, help="neighbours per estimate")
    parser.add_argument("--sharpness", type=_non_negative, default=None)
    return parser


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("expected a number from 0 to 1")
    return number


def _non_negative(value: str) -> float:
    number = float(value)
    if not 0.0 <= number < math.inf:  # as [routing.learning]; nan compares false
        raise argparse.ArgumentTypeError("expected a finite number of 0 or more")
    return number


def learning_settings(args: argparse.Namespace, ws: Workspace) -> LearningSettings:
    """The configured ``[routing.learning]`` with the command line's overrides."""
    overrides: dict[str, Any] = {
        "quality_target": args.quality_target, "explore_share": args.explore_share,
        "k": args.k, "sharpness": args.sharpness, "calibration_window": args.calibration_window,
        "relative_to": args.relative_to, "margin": args.margin,
        "escalated_weight": args.escalated_weight,
        "bias_correction": None if args.bias_correction is None else args.bias_correction == "on",
    }
    settings = replace(ws.routing.learning, **{k: v for k, v in overrides.items()
                                               if v is not None})
    if settings.k < 1 or settings.quality_target <= 0 or settings.calibration_window < 0:
        raise ConfigError("--k must be 1 or more, --quality-target above 0, "
                          "--calibration-window 0 or more")
    # Memory large enough for the whole stream: what is measured is learning, not forgetting.
    return replace(settings, max_outcomes=max(settings.max_outcomes, 16))


async def labelled_vectors(ws: Workspace, items: Sequence[Labelled]) -> FloatArray:
    """The vectors the gateway would route ``items`` by (cached like ``routes eval``'s)."""
    embedder = embedder_for(ws)
    texts = [head_and_tail(i.text, ws.routing.max_prompt_tokens) for i in items]
    return await data_vectors(ws, embedder, texts)


async def _replay(args: argparse.Namespace, settings: Settings) -> ReplayReport:
    ws = workspace(args, settings)
    plan = tier_plan(ws.routing, ws.tiers)
    items = read_labelled(args.data)
    vectors = await labelled_vectors(ws, items)
    prior: Policy
    if args.prior == "routes":
        router = await router_for(ws, embedder_for(ws))
        intent: Callable[[FloatArray], Decision] = router.route
        prior = router.policy
    else:
        prior = _DefaultTier(fallback(plan.default, Reason.OUT_OF_SCOPE, "replay: default tier"))
        intent = prior.decision_for
    learning = learning_settings(args, ws)
    policy = LearnedPolicy(prior, Learner(learning), plan, learning,
                           tier_costs(settings.models), seed=args.seed)
    return replay(items, vectors, policy, intent, feedback_rate=args.feedback_rate,
                  seed=args.seed, costs=tier_costs(settings.models))


class _DefaultTier:
    """The prior of ``--prior default``: every prompt to the default tier."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    def decide(self, evidence: Evidence) -> Decision:
        return self.decision

    def decision_for(self, vector: FloatArray) -> Decision:
        return self.decision


async def _eval(args: argparse.Namespace, settings: Settings) -> EvalReport:
    ws = workspace(args, settings)
    train, test = read_labelled(args.train), read_labelled(args.test)
    train_vectors = await labelled_vectors(ws, train)
    test_vectors = await labelled_vectors(ws, test)
    learning = learning_settings(args, ws)
    learning = replace(learning, max_outcomes=max(learning.max_outcomes, 4 * len(train)))
    return evaluate(train, train_vectors, test, test_vectors, Learner(learning),
                    tier_plan(ws.routing, ws.tiers))


def _write_json(path: Path | None, report: EvalReport | ReplayReport) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(report), indent=2) + "\n", "utf-8")


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(_replay(args, settings))
    _write_json(args.json, report)
    print(format_replay(report, args.data))
    return 0


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(_eval(args, settings))
    _write_json(args.json, report)
    print(format_eval(report, args.train, args.test))
    return 0


def format_replay(r: ReplayReport, source: Path) -> str:
    lines = [
        f"replay {source}: {r.prompts} prompts, feedback rate {r.feedback_rate:.0%}, "
        f"seed {r.seed}",
        "                    reasoning share  quality  cost   (vs always reasoning)",
    ]
    for name, w in (("whole stream", r.whole), ("second half", r.second_half)):
        lines.append(f"  {name:<18}{w.strong_share:>12.1%}{w.quality:>10.1%}{w.cost:>7.1%}"
                     f"   escalations {w.escalations}")
    lines.append(f"  always cheap: quality {r.always_cheap_quality:.1%}")
    lines.append("  curve (prompts: reasoning share, quality, cost)")
    lines += [f"    {w.start:>6}-{w.end:<6}{w.strong_share:>8.1%}{w.quality:>8.1%}{w.cost:>8.1%}"
              for w in r.curve]
    return "\n".join(lines)


def format_eval(r: EvalReport, train: Path, test: Path) -> str:
    oracle = (f"{r.group_oracle_share_for_95:.1%}" if r.group_oracle_share_for_95 is not None
              else "n/a (no groups)")
    return "\n".join([
        f"eval: learned {r.train} prompts of {train}, scored {r.test} of {test}",
        f"  accuracy: cheap {r.weak_accuracy:.1%}, reasoning {r.strong_accuracy:.1%}",
        f"  reasoning share for 95% of always-reasoning quality: {r.share_for_95:.1%} "
        f"(quality target {r.target_for_95:.3f}; random {r.random_share_for_95:.1%}, "
        f"group oracle {oracle})",
        f"  CPT(50%) {r.cpt50:.1%}  CPT(80%) {r.cpt80:.1%}  APGR {r.apgr:.3f}",
        "  curve (reasoning share: quality): " + ", ".join(
            f"{x:.0%}: {y:.3f}" for x, y in r.curve[::2]),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.routing.learned.cli learn ...``: the commands without the main CLI."""
    return standalone(add_commands, argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
