"""A road not yet taken, measured: a per-prompt difficulty signal from the prompt's text.

Same folds as ``bench/learn_cv.py`` (whole MMLU subjects, GSM8K questions; training files only;
``--seeds`` deals them anew). Per fold, the learner's own ranking score (``cheap_ratio``: with
the shipped ``relative_to = "gain"``, one less the cheap tier's estimated shortfall in units of
0.9) is combined with a gain predicted from five features of the text that do not name a
subject (log length, share of digits, log count of numbers, log count of operator symbols, log
mean length of the lettered options), by a ridge regression of (reasoning right less cheap
right) on the fold's training part: score = knn - w x predicted gain / 0.9. Printed is the mean
share for 95% of always-reasoning quality per weight ``w`` (0: the learner alone; "features":
the features alone) and the paired difference from ``w`` = 0 over the same folds with its
standard error. The gateway does not use this signal: its learner sees vectors, not text (see
bench/RESULTS.md, issue 15, seventh round).

    python bench/learn_cv_features.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gateway.core.config import load
from gateway.core.routing_settings import LearningSettings
from gateway.routing.cli import workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.replay import (
    QUALITY_95,
    cheap_ratio,
    learn_all,
    quality_curve,
    read_labelled,
    share_reaching,
)

sys.path.insert(0, str(Path(__file__).parent))
from learn_cv import folds_by_group, folds_by_item, paired

WEIGHTS: tuple[float | str, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, "features")
TIERS = ("cheap", "reasoning")


def features(text: str) -> list[float]:
    """What may say how hard a prompt is, whatever its subject."""
    digits = sum(c.isdigit() for c in text)
    options = re.findall(r"\n[A-D]\. (.*)", text)
    return [
        float(np.log1p(len(text))),
        digits / max(len(text), 1),
        float(np.log1p(len(re.findall(r"\d+(?:\.\d+)?", text)))),
        float(np.log1p(len(re.findall(r"[=+\-*/^<>√∑∫πθ]", text)))),
        float(np.log1p(np.mean([len(o) for o in options]) if options else 0.0)),
    ]


def predicted_gain(x: np.ndarray, gain: np.ndarray, train: np.ndarray,
                   held: np.ndarray) -> np.ndarray:
    """A ridge regression (L2 1) of the gain on the standardized features, fitted on ``train``."""
    mean, scale = x[train].mean(0), x[train].std(0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.linalg.solve(z[train].T @ z[train] + np.eye(z.shape[1]), z[train].T @ gain[train])
    return np.asarray(z[held] @ w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    ws = workspace(SimpleNamespace(routes=None, cache=None, model_dir=None), load(None))
    settings = replace(LearningSettings(), max_outcomes=50_000)
    for name, by_group in (("mmlu", True), ("gsm8k", False)):
        items = read_labelled(Path(f"bench/out/{name}_train.jsonl"))
        vectors = asyncio.run(labelled_vectors(ws, items))
        x = np.array([features(i.text) for i in items])
        weak = np.array([i.outcomes["cheap"] for i in items], float)
        strong = np.array([i.outcomes["reasoning"] for i in items], float)
        shares: dict[float | str, list[float]] = {w: [] for w in WEIGHTS}
        for seed in args.seeds:
            for fold in (folds_by_group if by_group else folds_by_item)(items, 5, seed):
                held = np.array(fold)
                train = np.setdiff1d(np.arange(len(items)), held)
                learner = Learner(settings, clock=lambda: 0.0)
                learn_all(learner, [items[j] for j in train], vectors[train], TIERS)
                knn = cheap_ratio(learner, vectors[held], TIERS).astype(np.float64)
                gain = predicted_gain(x, strong - weak, train, held)
                for w in WEIGHTS:
                    score = -gain if w == "features" else knn - float(w) * gain / 0.9
                    curve = quality_curve(score.astype(np.float32), weak[held], strong[held])
                    shares[w].append(share_reaching(curve, QUALITY_95 * strong[held].mean()))
        for w, s in shares.items():
            print(f"{name} weight {w}: share95 {statistics.mean(s):.3f}"
                  f"{paired(s, shares[0.0])}", flush=True)


if __name__ == "__main__":
    main()
