"""A road not yet taken, measured: a ridge regression over the embedding instead of the kNN.

Same folds as ``bench/learn_cv.py`` (whole MMLU subjects, GSM8K questions; training files
only). Per fold, a ridge regression of each tier's correctness on the full 384-dimension
embedding (closed form, L2 ``lam``) scores the held-out fold either by the cheap tier's
predicted correctness or by its ratio to the reasoning tier's; printed is the mean share for 95%
of always-reasoning quality, to compare with ``learn_cv.py``'s kNN figures. The gateway does not
use this model (yet): see bench/RESULTS.md.

    python bench/learn_cv_linear.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gateway.core.config import load
from gateway.routing.cli import workspace
from gateway.routing.learned.cli import labelled_vectors
from gateway.routing.learned.replay import quality_curve, read_labelled, share_reaching

sys.path.insert(0, str(Path(__file__).parent))
from learn_cv import folds_by_group, folds_by_item


def main() -> None:
    config = load(None)
    ws = workspace(SimpleNamespace(routes=None, cache=None, model_dir=None), config)
    for name, by_group in (("mmlu", True), ("gsm8k", False)):
        items = read_labelled(Path(f"bench/out/{name}_train.jsonl"))
        vectors = asyncio.run(labelled_vectors(ws, items))
        folds = (folds_by_group if by_group else folds_by_item)(items, 5, 0)
        weak = np.array([i.outcomes["cheap"] for i in items], float)
        strong = np.array([i.outcomes["reasoning"] for i in items], float)
        x = np.hstack([vectors, np.ones((len(vectors), 1))])
        for score in ("cheap", "ratio"):
            for lam in (1.0, 10.0, 30.0):
                shares = []
                for held in folds:
                    train = np.setdiff1d(np.arange(len(items)), held)
                    a = x[train].T @ x[train] + lam * np.eye(x.shape[1])
                    p_weak = np.clip(x[held] @ np.linalg.solve(a, x[train].T @ weak[train]),
                                     0.01, 1)
                    p_strong = np.clip(x[held] @ np.linalg.solve(a, x[train].T @ strong[train]),
                                       0.01, 1)
                    s = p_weak if score == "cheap" else p_weak / p_strong
                    curve = quality_curve(s.astype(np.float32), weak[held], strong[held])
                    shares.append(share_reaching(curve, 0.95 * strong[held].mean()))
                print(f"{name} ridge by {score}, lam {lam}: share95 "
                      f"{statistics.mean(shares):.3f}", flush=True)


if __name__ == "__main__":
    main()
