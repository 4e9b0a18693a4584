"""Roads not yet taken, measured: ranking signals that might carry across subjects.

Same folds as ``bench/learn_cv.py`` (whole MMLU subjects, GSM8K questions; training files only;
``--seeds`` deals them anew). Per fold, the learner's own ranking score (``cheap_ratio``: with
the shipped ``relative_to = "gain"``, one less the cheap tier's estimated shortfall in units of
0.9) is combined with a gain (reasoning right less cheap right) predicted by one of:

- ``features``: five features of the text that do not name a subject (log length, share of
  digits, log count of numbers, log count of operator symbols, log mean length of the lettered
  options), by a ridge regression (L2 1) on the fold's training part;
- ``clustersN``: the mean gain of the nearest of N spherical k-means clusters of the training
  part's vectors (shrunk by 2 prompts' worth of the overall gain): pooling by region rather
  than by nearest prompts;

as score = knn - w x predicted gain / 0.9. Printed is the mean share for 95% of always-reasoning
quality per signal and weight ``w`` (``alone``: the signal without the learner) and the paired
difference from the learner alone over the same folds, with its standard error. The gateway
uses neither signal: its learner sees vectors, not text (bench/RESULTS.md, issue 15, seventh
round).

    python bench/learn_cv_transfer.py [--seeds 0 1 2]
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
from gateway.routing.learned.replay import cheap_ratio, learn_all, read_labelled, share_for_95

sys.path.insert(0, str(Path(__file__).parent))
from learn_cv import folds_by_group, folds_by_item, paired

WEIGHTS: tuple[float | str, ...] = (0.25, 0.5, 1.0, 2.0, "alone")
CLUSTERS = (16, 64)
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


def cluster_gain(vectors: np.ndarray, gain: np.ndarray, train: np.ndarray, held: np.ndarray,
                 n: int, seed: int) -> np.ndarray:
    """The mean training gain of each held-out prompt's nearest of ``n`` spherical k-means
    clusters of the training vectors (20 rounds from a seeded draw)."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centres = x[train][np.random.default_rng(seed).choice(len(train), n, replace=False)]
    for _ in range(20):
        member = np.argmax(x[train] @ centres.T, 1)
        for j in range(n):
            if (member == j).any():
                centre = x[train][member == j].mean(0)
                centres[j] = centre / np.linalg.norm(centre)
    member = np.argmax(x[train] @ centres.T, 1)
    g, overall = gain[train], float(gain[train].mean())
    means = np.array([(g[member == j].sum() + 2 * overall) / ((member == j).sum() + 2)
                      for j in range(n)])
    return np.asarray(means[np.argmax(x[held] @ centres.T, 1)])


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
        shares: dict[str, list[float]] = {}
        for seed in args.seeds:
            for fold in (folds_by_group if by_group else folds_by_item)(items, 5, seed):
                held = np.array(fold)
                train = np.setdiff1d(np.arange(len(items)), held)
                learner = Learner(settings, clock=lambda: 0.0)
                learn_all(learner, [items[j] for j in train], vectors[train], TIERS)
                knn = cheap_ratio(learner, vectors[held], TIERS).astype(np.float64)
                signals = {"features": predicted_gain(x, strong - weak, train, held)} | {
                    f"clusters{n}": cluster_gain(vectors, strong - weak, train, held, n, seed)
                    for n in CLUSTERS}
                shares.setdefault("learner alone", []).append(
                    share_for_95(knn.astype(np.float32), weak[held], strong[held]))
                for signal, gain in signals.items():
                    for w in WEIGHTS:
                        score = -gain if w == "alone" else knn - float(w) * gain / 0.9
                        shares.setdefault(f"{signal} weight {w}", []).append(
                            share_for_95(score.astype(np.float32), weak[held], strong[held]))
        for label, s in shares.items():
            print(f"{name} {label}: share95 {statistics.mean(s):.3f}"
                  f"{paired(s, shares['learner alone'])}", flush=True)

if __name__ == "__main__":
    main()
