"""Choose the learner's hyperparameters by cross-validation on the TRAINING files only.

MMLU: folds of whole subjects (the ``group`` field), so each fold is scored on subjects it did
not learn, as the held-out test is. GSM8K: folds of questions. For each setting in ``GRID``
(``k``, the similarity ``floor``, ``linear_weight`` and ``ridge``) it prints the mean
reasoning-tier share needed for 95% of always-reasoning quality over the folds (lower is
better) and APGR; the test files are never read. The defaults in ``LearningSettings`` are the
setting chosen here: the lowest mean share over both data sets.

    python bench/learn_cv.py [--mmlu bench/out/mmlu_train.jsonl]
                             [--gsm8k bench/out/gsm8k_train.jsonl]
                             [--grid relative_to=prior,best,gain k=32,64] [--seeds 0 1 2]

``--grid`` searches the named settings instead of ``GRID`` (the others at their defaults).
``--seeds`` deals the folds once per seed and averages over every fold; beside each setting it
prints the mean per-fold difference from the grid's first setting with its standard error
(paired: the same folds), so a difference smaller than the noise of one deal shows as such.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gateway.core.config import load
from gateway.core.routing_settings import LearningSettings, tier_plan
from gateway.routing.cli import workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.replay import Labelled, evaluate, read_labelled

GRID = {
    "k": (64, 128),
    "floor": (0.2, 0.3),
    "linear_weight": (0.0, 8.0, 32.0, 1000.0),
    "ridge": (1.0, 10.0),
}
"""The settings searched (``sharpness`` 10 and ``dim`` 192 were chosen by the first search of
this script over k in 32..256, sharpness 0/10 and dim 128/192/384; see bench/RESULTS.md)."""


def parse_grid(items: Sequence[str]) -> dict[str, tuple[object, ...]]:
    """``key=v1,v2`` items as a grid, each value of the type of the setting's default."""
    defaults = LearningSettings()
    grid: dict[str, tuple[object, ...]] = {}
    for item in items:
        key, _, values = item.partition("=")
        kind = type(getattr(defaults, key))
        grid[key] = tuple(kind(v) for v in values.split(","))
    return grid


def folds_by_group(items: Sequence[Labelled], n: int, seed: int) -> list[list[int]]:
    groups = sorted({str(i.group) for i in items})
    random.Random(seed).shuffle(groups)
    fold_of = {g: k % n for k, g in enumerate(groups)}
    folds = [[j for j, i in enumerate(items) if fold_of[str(i.group)] == k] for k in range(n)]
    # A fold's training part is every other fold: no subject may sit in two folds.
    held = [{str(items[j].group) for j in fold} for fold in folds]
    assert sum(map(len, held)) == len(groups), "a group dealt to two folds"
    return folds


def folds_by_item(items: Sequence[Labelled], n: int, seed: int) -> list[list[int]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [sorted(order[k::n]) for k in range(n)]


def cross_validate(items: Sequence[Labelled], vectors: np.ndarray, folds: list[list[int]],
                   settings: LearningSettings, plan: object) -> tuple[list[float], list[float]]:
    """Each fold's share for 95% and APGR."""
    shares, apgrs = [], []
    for held in folds:
        held_set = set(held)
        train = [j for j in range(len(items)) if j not in held_set]
        report = evaluate([items[j] for j in train], vectors[train], [items[j] for j in held],
                          vectors[held], Learner(settings), plan)  # type: ignore[arg-type]
        shares.append(report.share_for_95)
        apgrs.append(report.apgr)
    return shares, apgrs


def paired(shares: Sequence[float], first: Sequence[float]) -> str:
    """The mean per-fold difference from the grid's first setting, with its standard error:
    the same folds under both, so what the deal of subjects adds to each cancels."""
    diffs = [a - b for a, b in zip(shares, first, strict=True)]
    if len(diffs) < 2:
        return ""
    error = statistics.stdev(diffs) / len(diffs) ** 0.5
    return f" vs first {statistics.mean(diffs):+.3f} +- {error:.3f}"


async def main_async(args: argparse.Namespace) -> None:
    config = load(None)
    ws = workspace(SimpleNamespace(routes=None, cache=None, model_dir=None), config)
    plan = tier_plan(ws.routing, ws.tiers)
    base = replace(LearningSettings(), max_outcomes=50_000)
    grid = parse_grid(args.grid) if args.grid else GRID
    totals: list[dict[tuple[float, ...], float]] = []
    for name, path, by_group in (("mmlu", args.mmlu, True), ("gsm8k", args.gsm8k, False)):
        items = read_labelled(path)
        vectors = await labelled_vectors(ws, items)
        # Each fold seed deals the subjects (or questions) into folds anew: with 19 subjects
        # one deal decides much of the mean, so several are averaged.
        deals = [(folds_by_group if by_group else folds_by_item)(items, args.folds, seed)
                 for seed in args.seeds]
        print(f"{name}: {len(items)} training prompts, {args.folds} folds, "
              f"fold seeds {args.seeds}")
        results, first = [], None
        for values in itertools.product(*grid.values()):
            settings = replace(base, **dict(zip(grid, values, strict=True)))
            shares, apgrs = [], []
            for folds in deals:
                fold_shares, fold_apgrs = cross_validate(items, vectors, folds, settings, plan)
                shares += fold_shares
                apgrs += fold_apgrs
            first = first or shares
            share, apgr_ = statistics.mean(shares), statistics.mean(apgrs)
            results.append((share, -apgr_, values))
            print(f"  {dict(zip(grid, values, strict=True))}: share95 {share:.3f} "
                  f"APGR {apgr_:.3f}{paired(shares, first)}", flush=True)
        best = min(results)
        print(f"{name} best: {dict(zip(grid, best[2], strict=True))} share95 {best[0]:.3f}")
        totals.append({values: share for share, _, values in results})
    both = {v: statistics.mean(t[v] for t in totals) for v in totals[0]}
    # The lowest mean share; ties (within half a point) go to the smaller k: a cheaper search.
    # By k's own place in the grid: with ``--grid relative_to=... k=...`` it is not the first.
    k_at = list(grid).index("k") if "k" in grid else None
    best_share = min(both.values())
    chosen = min((v for v in both if both[v] <= best_share + 0.005),
                 key=lambda v: (0 if k_at is None else v[k_at], both[v]))
    print(f"chosen for both (mean share95 {both[chosen]:.3f}): "
          f"{dict(zip(grid, chosen, strict=True))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu", type=Path, default=Path("bench/out/mmlu_train.jsonl"))
    parser.add_argument("--gsm8k", type=Path, default=Path("bench/out/gsm8k_train.jsonl"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="fold seeds: each deals the folds anew; the shares are averaged")
    parser.add_argument("--grid", nargs="*", default=None, metavar="KEY=V1,V2",
                        help="search these settings instead of GRID")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
