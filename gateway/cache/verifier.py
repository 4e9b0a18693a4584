"""A learned verifier for semantic candidates: "is this the same question?", as a probability.

After the hard guards pass a candidate, ``Verifier.probability(features(...))`` scores it with a
logistic regression over a few numbers that describe the pair: the cosine (and its log-odds-like
stretch near 1), the guards' soft differences by kind, the share of content words and of words
the two texts share, their lengths, differing persons, how many names and numbers they hold,
and whether they run to more than one sentence. Inference is one dot product over ``FEATURES``
(no stored vector needed: everything comes from the two texts' guard profiles and the cosine).

The weights live in a small JSON file stamped with the embedding model and dimension they were
trained on (the cosine's scale is the model's), the lowest cosine they were trained from
(``min_cosine``: candidates below it are never served) and the operating point chosen on the
pairs' tuning part (``threshold``). ``applies_to(space)`` says whether a configured model
matches the stamp; the cache falls back to its cosine-and-margin rule when it does not.
``train(rows, labels)`` fits new weights (Newton's method, L2-regularised, on standardised
features, folded back into plain weights). The shipped file, ``verifier.json`` beside this
module, was trained on Quora Question Pairs from GPTCache's benchmark (github.com/zilliztech/
GPTCache ``examples/benchmark/``, repository MIT; Quora Question Pairs terms apply).

Pure functions and dataclasses; ``load``/``save`` touch only the file they are given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.cache.guards import Verdict
from gateway.cache.index import VectorSpace
from gateway.cache.text_features import Profile

FORMAT = 1
ATTRIBUTION = ("trained on Quora Question Pairs from GPTCache's benchmark "
               "(github.com/zilliztech/GPTCache examples/benchmark/, repository MIT; "
               "Quora Question Pairs terms apply)")
FEATURES = (
    "cosine", "cosine_stretch", "added", "substituted", "person", "frame", "content_overlap",
    "word_overlap", "length_difference", "shorter_length", "persons_differ", "names",
    "has_numbers", "sentences",
)
Row = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Verifier:
    """Logistic-regression weights over ``FEATURES`` and the stamp that says where they apply."""

    model: str
    dim: int
    weights: tuple[float, ...]
    bias: float
    min_cosine: float
    threshold: float
    trained_on: Mapping[str, Any] = field(default_factory=dict)

    def applies_to(self, space: VectorSpace | None) -> bool:
        """Whether vectors of ``space`` are those the weights were trained on: same model name
        (the part before any ``|`` variant) and dimension."""
        return space is not None and space.dim == self.dim and model_name(space) == self.model

    def probability(self, row: Row) -> float:
        z = float(np.dot(self._w, row)) + self.bias
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    @property
    def _w(self) -> Row:
        return np.asarray(self.weights, dtype=np.float64)


def model_name(space: VectorSpace) -> str:
    return space.model.split("|", 1)[0]


def features(stored: Profile, asked: Profile, verdict: Verdict, cosine: float) -> Row:
    """The pair as ``FEATURES``; ``verdict`` is the guards' (passed) verdict on it."""
    counts = dict(verdict.differences)
    words_a = {t.lower for t in stored.words}
    words_b = {t.lower for t in asked.words}
    na, nb = len(stored.words), len(asked.words)
    content = stored.content | asked.content
    return np.array([
        cosine,
        -math.log(max(1.0 - cosine, 1e-3)),
        counts.get("added", 0),
        counts.get("substituted", 0),
        counts.get("person", 0),
        counts.get("frame", 0),
        len(stored.content & asked.content) / len(content) if content else 1.0,
        len(words_a & words_b) / max(1, len(words_a | words_b)),
        abs(na - nb) / max(na, nb, 1),
        math.log1p(min(na, nb)),
        len(stored.persons ^ asked.persons),
        len(stored.entities | asked.entities),
        float(bool(stored.numbers or asked.numbers)),
        float(_sentences(stored) > 1 or _sentences(asked) > 1),
    ], dtype=np.float64)


def _sentences(p: Profile) -> int:
    return len({t.sentence for t in p.words})


def train(rows: Row, labels: Sequence[int] | npt.NDArray[Any], l2: float = 30.0,
          iterations: int = 30) -> tuple[tuple[float, ...], float]:
    """Logistic regression (weights, bias) fitted by Newton's method on standardised rows with
    an L2 penalty ``l2``, returned as plain weights over the raw features."""
    y = np.asarray(labels, dtype=np.float64)
    mean, scale = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    z = np.hstack([(rows - mean) / scale, np.ones((len(rows), 1))])
    penalty = np.r_[np.full(rows.shape[1], l2), 0.0]
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -500, 500)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-9:
            break
    weights = w[:-1] / scale
    bias = float(w[-1] - np.dot(weights, mean))
    return tuple(round(float(x), 8) for x in weights), round(bias, 8)


def load(path: Path) -> Verifier:
    """A verifier file; raises ValueError naming the file when it is not one."""
    try:
        raw = json.loads(path.read_text("utf-8"))
        if raw.get("format") != FORMAT or list(raw["features"]) != list(FEATURES):
            raise ValueError("another format or feature list")
        weights = tuple(float(x) for x in raw["weights"])
        if len(weights) != len(FEATURES):
            raise ValueError("one weight per feature expected")
        return Verifier(str(raw["model"]), int(raw["dim"]), weights, float(raw["bias"]),
                        float(raw["min_cosine"]), float(raw["threshold"]),
                        dict(raw.get("trained_on") or {}))
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a cache verifier file ({exc})") from exc


def save(verifier: Verifier, path: Path) -> None:
    """Write ``verifier`` atomically (temporary file, then ``os.replace``)."""
    record = {
        "format": FORMAT, "model": verifier.model, "dim": verifier.dim,
        "features": list(FEATURES), "weights": list(verifier.weights), "bias": verifier.bias,
        "min_cosine": verifier.min_cosine, "threshold": verifier.threshold,
        "trained_on": dict(verifier.trained_on), "attribution": ATTRIBUTION,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    os.replace(tmp, path)
