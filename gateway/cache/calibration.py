"""Choosing the semantic threshold (and the guards' margins) from labelled pairs, and recording
the choice.

``fit_threshold(outcomes, precision)`` picks the lowest cosine threshold at which hit precision
(guards included, as measured by ``evaluate.run_pairs``) is at least ``precision`` at that
threshold and at every higher one that still serves ``min_hits`` answers: the operating point with
the most hits that never dips below the target on the way up. ``write_calibration`` stores it as
a small JSON file that ``parse_cache`` reads when the config sets no ``threshold``;
``toml_line`` is the same choice as a config line.

``fit_margins(outcomes)`` refits the scoring rule's margins (``guards.MARGINS``: the cosine each
kind of soft difference costs) by a grid search that maximises the mean precision over the hit
rates where the cache operates (``HIT_RATES``); the shipped margins are its result on the tuning
half of the QQP pairs (``bench/eval_cache.py``). ``rescore`` applies other margins to measured
outcomes. Touches only the file it is asked to write.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.evaluate import Outcome, Point, point
from gateway.cache.guards import MARGINS, margin
from gateway.core.cache_settings import CALIBRATION_VERSION

# Margins tried per kind of soft difference, and the hit rates whose precision is averaged.
MARGIN_GRID: Mapping[str, tuple[float, ...]] = {
    "added": (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08),
    "substituted": (0.0, 0.005, 0.01, 0.02),
    "person": (0.0, 0.01, 0.02, 0.03, 0.04, 0.06),
    "frame": (0.0, 0.01, 0.02, 0.03),
}
HIT_RATES = (0.12, 0.15, 0.18, 0.20, 0.22)


@dataclass(frozen=True, slots=True)
class Fit:
    threshold: float
    target_precision: float
    tune: Point
    held_out: Point | None = None
    rule: str = "cosine"  # the serving rule whose threshold this is: "cosine" or "verifier"


def fit_threshold(outcomes: Sequence[Outcome], precision: float,
                  min_hits: int = 30) -> Fit | None:
    """The most permissive threshold whose precision holds at and above it; None if none does."""
    true_hits = sum(1 for o in outcomes if o.kind == "exact" and o.label == 1)
    false_hits = sum(1 for o in outcomes if o.kind == "exact" and o.label != 1)
    semantic = sorted((o for o in outcomes if o.kind == "semantic"), key=lambda o: -o.score)
    chosen: float | None = None
    for i, o in enumerate(semantic):
        true_hits += o.label == 1
        false_hits += o.label != 1
        if i + 1 < len(semantic) and semantic[i + 1].score == o.score:
            continue  # thresholds fall between distinct scores
        if true_hits / (true_hits + false_hits) >= precision:
            chosen = o.score
        elif true_hits + false_hits >= min_hits:
            break
    if chosen is None:
        return None
    return Fit(chosen, precision, point(outcomes, chosen))


@dataclass(frozen=True, slots=True)
class MarginFit:
    margins: dict[str, float]
    objective: float  # mean precision at HIT_RATES with these margins
    shipped: float  # the same with the shipped guards.MARGINS


def rescore(outcomes: Sequence[Outcome], margins: Mapping[str, float]) -> list[Outcome]:
    """The outcomes as the cache would score them with other margins (semantic hits only)."""
    return [replace(o, score=round(o.cosine - margin(o.differences, margins), 6))
            if o.kind == "semantic" else o for o in outcomes]


def fit_margins(outcomes: Sequence[Outcome], grid: Mapping[str, Sequence[float]] = MARGIN_GRID,
                hit_rates: Sequence[float] = HIT_RATES) -> MarginFit:
    """The grid's margins with the highest mean precision at ``hit_rates``; ties go to the
    smaller margins (listed first in the grid)."""
    kinds = list(grid)
    semantic = [o for o in outcomes if o.kind == "semantic"]
    cosine = np.array([o.cosine for o in semantic], dtype=np.float64)
    counts = np.array([[dict(o.differences).get(k, 0) for k in kinds] for o in semantic],
                      dtype=np.float64).reshape(len(semantic), len(kinds))
    labels = np.array([o.label == 1 for o in semantic], dtype=bool)
    exact_true = sum(1 for o in outcomes if o.kind == "exact" and o.label == 1)
    exact_false = sum(1 for o in outcomes if o.kind == "exact" and o.label != 1)
    duplicates = sum(1 for o in outcomes if o.label == 1)

    def objective(weights: Sequence[float]) -> float:
        order = np.argsort(-(cosine - counts @ np.asarray(weights)), kind="stable")
        true_hits = exact_true + np.cumsum(labels[order])
        served = exact_true + exact_false + np.arange(1, len(order) + 1)
        total = 0.0
        for rate in hit_rates:
            reached = np.flatnonzero(true_hits >= math.ceil(rate * duplicates))
            total += float(true_hits[reached[0]] / served[reached[0]]) if len(reached) else 0.0
        return total / len(hit_rates)

    best: tuple[float, tuple[float, ...]] | None = None
    for weights in itertools.product(*(grid[k] for k in kinds)):
        value = objective(weights)
        if best is None or value > best[0] + 1e-12:
            best = (value, weights)
    assert best is not None
    shipped = objective([MARGINS.get(k, 0.0) for k in kinds])
    return MarginFit(dict(zip(kinds, best[1], strict=True)), round(best[0], 4), round(shipped, 4))


def with_held_out(fit: Fit, outcomes: Sequence[Outcome]) -> Fit:
    return replace(fit, held_out=point(outcomes, fit.threshold))


def toml_line(fit: Fit) -> str:
    key = "verifier_threshold" if fit.rule == "verifier" else "threshold"
    return (f"{key} = {fit.threshold:.4f}  # [cache] fitted for precision "
            f"{fit.target_precision:.2f}: tune precision {fit.tune.precision:.3f}, "
            f"hit rate {fit.tune.hit_rate:.3f}")


def write_calibration(path: Path, fit: Fit, source: str, vector_space: str) -> None:
    """Write the calibration file atomically (temporary file, then ``os.replace``)."""
    record: dict[str, Any] = {
        "version": CALIBRATION_VERSION,
        "rule": fit.rule,
        "threshold": fit.threshold,
        "target_precision": fit.target_precision,
        "tune": asdict(fit.tune),
        "held_out": asdict(fit.held_out) if fit.held_out else None,
        "pairs": source,
        "vector_space": vector_space,
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)
