"""Where the offline MMLU figure is lost: across subjects, not within them.

A limit measurement, not a fit: nothing here is chosen, and the shipped learner
(``LearningSettings()``) is used unchanged. It reads the test file, which is why no setting may
be picked from its output. For MMLU (``bench/out/mmlu_{train,test}.jsonl``) it prints each
subject's tier accuracies and gain, then the reasoning-tier share for 95% of always-reasoning
quality on the test subjects, scored five ways:

- ``cross-subject``: the learner trained on the training subjects (``gateway learn eval``'s
  figure, the goal's setting);
- ``its subject means``: the same scores averaged within each test subject, so only the order of
  the subjects is left (what the learner transfers of which subject gains most);
- ``group oracle``: the subjects in the order of their true gain, as ``learn eval`` prints it;
- ``oracle subjects + its order within``: the true order of the subjects, the learner's order
  within each (what within-subject ranking adds once the subject is known);
- ``in-distribution``: the learner trained on the other folds of the test file itself (folds of
  prompts, so every test subject is seen), with and without the training file: what the same
  estimator does on subjects it has outcomes of, averaged over ``--folds``; beside it, the true
  order of the subjects with the order these out-of-fold scores give within each. Once per
  ``--seeds`` deal of the folds.

Then whether a subject's gain follows from other subjects' outcomes at all: over all 29
subjects, each one scored by the learner trained on the other 28 (the share for 95% over every
prompt, and the correlation of each subject's mean score with its gain); and how well the test
subjects' order must be known to reach 55%: their true gains plus Gaussian noise, 400 draws per
noise level, the mean correlation with the truth against the mean share and how often it
reaches 55%.

    python bench/learn_transfer_limit.py [--folds 5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gateway.core.config import load
from gateway.core.routing_settings import LearningSettings, TierPlan, tier_plan
from gateway.routing.cli import workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.replay import (
    FloatArray,
    Labelled,
    cheap_ratio,
    data_tiers,
    evaluate,
    random_share,
    read_labelled,
    share_for_95,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_cv import folds_by_item

OUT = Path(__file__).resolve().parent / "out"


def by_subject(scores: np.ndarray, groups: Sequence[str], key: dict[str, float]) -> np.ndarray:
    """Each prompt's subject's ``key`` (lower goes to the strong tier first), ties broken by
    ``scores`` scaled below the smallest gap between subjects."""
    level = np.array([key[g] for g in groups])
    gaps = np.diff(np.unique(level))
    span = float(scores.max() - scores.min()) or 1.0
    tie = (gaps.min() if len(gaps) else 1.0) / 2 / span
    return level + tie * (scores - scores.min())


def leave_one_subject_out(items: Sequence[Labelled], vectors: FloatArray,
                          settings: LearningSettings, plan: TierPlan) -> FloatArray:
    """Every prompt's score from the learner trained on every other subject."""
    tiers = data_tiers(items, plan)
    scores = np.empty(len(items), dtype=np.float32)
    for g in sorted({str(i.group) for i in items}):
        mine = [k for k, i in enumerate(items) if i.group == g]
        others = [k for k, i in enumerate(items) if i.group != g]
        learner = Learner(settings)
        evaluate([items[k] for k in others], vectors[others], [items[k] for k in mine],
                 vectors[mine], learner, plan)
        scores[mine] = cheap_ratio(learner, vectors[mine], (tiers[0], tiers[-1]))
    return scores


def subject_table(name: str, items: Sequence[Labelled], tiers: Sequence[str]) -> dict[str, float]:
    """Prints each subject's size, accuracies and gain; returns the gains."""
    print(f"{name} subjects: n, cheap, reasoning, gain")
    gains = {}
    for g in sorted({str(i.group) for i in items}):
        rows = [i for i in items if i.group == g]
        w = statistics.mean(float(i.outcomes[tiers[0]]) for i in rows)
        s = statistics.mean(float(i.outcomes[tiers[-1]]) for i in rows)
        print(f"  {g:32s} {len(rows):5d}  {w:.3f}  {s:.3f}  {s - w:+.3f}")
        gains[g] = s - w
    return gains


def in_distribution(train: Sequence[Labelled], vtrain: FloatArray, test: Sequence[Labelled],
                    vtest: FloatArray, settings: LearningSettings, plan: TierPlan,
                    folds: int, seed: int) -> tuple[float, float, FloatArray]:
    """The mean share over folds of ``test``, learning the other folds (without, and with
    ``train`` too), and every test prompt's out-of-fold score (learnt without ``train``)."""
    tiers = data_tiers(test, plan)
    alone, both = [], []
    scores = np.empty(len(test), dtype=np.float32)
    for held in folds_by_item(test, folds, seed):
        held_set = set(held)
        keep = [j for j in range(len(test)) if j not in held_set]
        seen, vseen = [test[j] for j in keep], vtest[keep]
        scored, vscored = [test[j] for j in held], vtest[held]
        learner = Learner(settings)
        alone.append(evaluate(seen, vseen, scored, vscored, learner, plan).share_for_95)
        scores[held] = cheap_ratio(learner, vscored, (tiers[0], tiers[-1]))
        both.append(evaluate([*train, *seen], np.vstack([vtrain, vseen]), scored, vscored,
                             Learner(settings), plan).share_for_95)
    return statistics.mean(alone), statistics.mean(both), scores


async def main_async(args: argparse.Namespace) -> None:
    config = load(None)
    ws = workspace(SimpleNamespace(routes=None, cache=None, model_dir=None), config)
    plan = tier_plan(ws.routing, ws.tiers)
    settings = replace(LearningSettings(), max_outcomes=50_000)
    train, test = read_labelled(OUT / "mmlu_train.jsonl"), read_labelled(OUT / "mmlu_test.jsonl")
    vtrain, vtest = await labelled_vectors(ws, train), await labelled_vectors(ws, test)
    tiers = data_tiers(train, plan)
    gains = subject_table("training", train, tiers) | subject_table("test", test, tiers)

    learner = Learner(settings)
    report = evaluate(train, vtrain, test, vtest, learner, plan)  # learns ``train`` into it
    scores = cheap_ratio(learner, vtest, (tiers[0], tiers[-1]))
    weak = np.array([i.outcomes[tiers[0]] for i in test], dtype=np.float64)
    strong = np.array([i.outcomes[tiers[-1]] for i in test], dtype=np.float64)
    groups = [str(i.group) for i in test]
    mean_score = {g: float(scores[[k for k, x in enumerate(groups) if x == g]].mean())
                  for g in set(groups)}
    test_groups = sorted(set(groups))
    true_order = {g: -gains[g] for g in test_groups}
    rank = statistics.correlation([mean_score[g] for g in test_groups],
                                  [true_order[g] for g in test_groups])
    print(f"test: cheap {weak.mean():.3f}, reasoning {strong.mean():.3f}; random "
          f"{report.random_share_for_95:.3f}")
    print(f"  cross-subject (learn eval)            {report.share_for_95:.3f}")
    print(f"  its subject means                     "
          f"{share_for_95(np.array([mean_score[g] for g in groups]), weak, strong):.3f}"
          f"  (correlation of subject mean score with -gain: {rank:+.2f})")
    print(f"  group oracle                          {report.group_oracle_share_for_95:.3f}")
    print(f"  oracle subjects + its order within    "
          f"{share_for_95(by_subject(scores, groups, true_order), weak, strong):.3f}")
    for seed in args.seeds:
        alone, both, fold_scores = in_distribution(train, vtrain, test, vtest, settings, plan,
                                                   args.folds, seed)
        within = share_for_95(by_subject(fold_scores, groups, true_order), weak, strong)
        print(f"  in-distribution, fold seed {seed}:  test folds {alone:.3f}, "
              f"with the training file {both:.3f}; oracle subjects + its order within "
              f"{within:.3f}")
    every = [*train, *test]
    loo = leave_one_subject_out(every, np.vstack([vtrain, vtest]), settings, plan)
    every_groups = [str(i.group) for i in every]
    every_weak = np.array([i.outcomes[tiers[0]] for i in every], dtype=np.float64)
    every_strong = np.array([i.outcomes[tiers[-1]] for i in every], dtype=np.float64)
    names = sorted(gains)
    means = [float(loo[[k for k, x in enumerate(every_groups) if x == g]].mean()) for g in names]
    oracle = by_subject(np.zeros(len(every)), every_groups, {g: -gains[g] for g in names})
    print(f"all {len(names)} subjects, each scored by the learner trained on the other "
          f"{len(names) - 1}: share {share_for_95(loo, every_weak, every_strong):.3f} "
          f"(random {random_share(every_weak.mean(), every_strong.mean()):.3f}, group oracle "
          f"{share_for_95(oracle, every_weak, every_strong):.3f}); correlation of its subject "
          f"means with -gain {statistics.correlation(means, [-gains[g] for g in names]):+.2f}")
    rng = np.random.default_rng(0)
    truth = np.array([gains[g] for g in test_groups])
    for noise in (0.02, 0.04, 0.06, 0.08, 0.12):
        draws = [truth + rng.normal(0, noise, len(truth)) for _ in range(400)]
        shares = np.array([share_for_95(by_subject(np.zeros(len(test)), groups, dict(
            zip(test_groups, -d, strict=True))), weak, strong) for d in draws])
        corr = statistics.mean(statistics.correlation(list(d), list(truth)) for d in draws)
        print(f"  test subjects' true gains + noise {noise:.2f}: correlation {corr:.2f}, share "
              f"{shares.mean():.3f}, at most 55% in {(shares <= 0.55).mean():.0%} of draws")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
