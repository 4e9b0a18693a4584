"""Choosing the semantic threshold from labelled pairs, and recording the choice.

``fit_threshold(outcomes, precision)`` picks the lowest cosine threshold at which hit precision
(guards included, as measured by ``evaluate.run_pairs``) is at least ``precision`` at that
threshold and at every higher one that still serves ``min_hits`` answers: the operating point with
the most hits that never dips below the target on the way up. ``write_calibration`` stores it as
a small JSON file that ``parse_cache`` reads when the config sets no ``threshold``;
``toml_line`` is the same choice as a config line. Touches only the file it is asked to write.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.cache.evaluate import Outcome, Point, point
from gateway.cache.settings import CALIBRATION_VERSION


@dataclass(frozen=True, slots=True)
class Fit:
    threshold: float
    target_precision: float
    tune: Point
    held_out: Point | None = None


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


def with_held_out(fit: Fit, outcomes: Sequence[Outcome]) -> Fit:
    return Fit(fit.threshold, fit.target_precision, fit.tune, point(outcomes, fit.threshold))


def toml_line(fit: Fit) -> str:
    return (f"threshold = {fit.threshold:.4f}  # [cache] fitted for precision "
            f"{fit.target_precision:.2f}: tune precision {fit.tune.precision:.3f}, "
            f"hit rate {fit.tune.hit_rate:.3f}")


def write_calibration(path: Path, fit: Fit, source: str, vector_space: str) -> None:
    """Write the calibration file atomically (temporary file, then ``os.replace``)."""
    record: dict[str, Any] = {
        "version": CALIBRATION_VERSION,
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
