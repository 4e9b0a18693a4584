"""Training the learned verifier from labelled pairs, through the serving path.

``train_verifier(pairs, embed, space, workdir)``:

1. runs the pairs through a real cache serving by cosine and margin (``evaluate.run_pairs``) to
   learn, for each pair, its cosine, whether the exact tier answers it and whether the hard
   guards pass it;
2. keeps the candidates the verifier will judge (not exact, guards passed, cosine at least
   ``min_cosine``) and describes each by ``verifier.features``;
3. scores every candidate out of fold (``folds``-fold cross-validation: each fold by weights
   trained on the others, through ``rule.Rule.judge``) and picks the operating point on those
   scores (``calibration.fit_threshold``: the lowest probability whose precision, exact hits
   included, stays at ``precision`` or above at every higher one serving ``min_hits``), so the
   threshold is not chosen on scores the weights were fitted to;
4. fits the final weights on all candidates and stamps them with the model, dimension,
   ``min_cosine``, the threshold and what they were trained on.

Touches only the scratch directory it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gateway.cache.calibration import Fit, fit_threshold
from gateway.cache.evaluate import Embed, Outcome, Pair, run_pairs
from gateway.cache.fingerprint import normalize_text
from gateway.cache.guards import compare
from gateway.cache.index import VectorSpace
from gateway.cache.rule import Rule
from gateway.cache.text_features import Profile, profile
from gateway.cache.verifier import Row, Verifier, features, model_name, train
from gateway.core.toml_table import ConfigError

DEFAULT_L2 = 30.0


@dataclass(frozen=True, slots=True)
class TrainOptions:
    precision: float = 0.95
    min_hits: int = 200
    min_cosine: float = 0.80
    l2: float = DEFAULT_L2
    folds: int = 5
    seed: int = 5


@dataclass(frozen=True, slots=True)
class Trained:
    verifier: Verifier
    fit: Fit | None  # the operating point on out-of-fold scores (None: precision never held)
    candidates: int


async def train_verifier(pairs: Sequence[Pair], embed: Embed, space: VectorSpace,
                         workdir: Path, options: TrainOptions = TrainOptions(),
                         source: str = "") -> Trained:
    outcomes = await run_pairs(pairs, embed, space, workdir)
    chosen = [i for i, o in enumerate(outcomes) if _candidate(o, options.min_cosine)]
    if len(chosen) < 2 * options.folds:
        raise ConfigError(f"{source or 'the pairs'}: only {len(chosen)} candidate pairs, too few "
                          f"to train a verifier (at least {2 * options.folds})")
    profiles = [(profile(normalize_text(pairs[i].text_a)), profile(normalize_text(pairs[i].text_b)))
                for i in chosen]
    rows = np.stack([_row(a, b, outcomes[i].cosine) for i, (a, b) in zip(chosen, profiles,
                                                                          strict=True)])
    labels = np.array([outcomes[i].label == 1 for i in chosen], dtype=np.float64)
    stamp = Verifier(model_name(space), space.dim, (), 0.0, options.min_cosine, 0.5)
    scored = list(outcomes)
    folds = np.random.default_rng(options.seed).permutation(len(chosen)) % options.folds
    for fold in range(options.folds):
        weights, bias = train(rows[folds != fold], labels[folds != fold], options.l2)
        rule = Rule(0.0, verifier=replace(stamp, weights=weights, bias=bias),
                    verifier_threshold=0.0)
        for k in np.flatnonzero(folds == fold):
            i = chosen[k]
            score = rule.judge(profiles[k][0], profiles[k][1], outcomes[i].cosine).score
            scored[i] = replace(outcomes[i], kind="semantic", score=score)
    for i, o in enumerate(outcomes):
        if o.kind == "semantic" and scored[i] is o:
            scored[i] = replace(o, kind=None, score=0.0)  # below min_cosine or refused
    fit = _best_fit(scored, options)
    weights, bias = train(rows, labels, options.l2)
    trained_on = {"pairs": source, "count": len(pairs), "candidates": len(chosen),
                  "l2": options.l2, "folds": options.folds,
                  "target_precision": options.precision, "min_hits": options.min_hits,
                  "reached_precision": None if fit is None else fit.target_precision,
                  "out_of_fold": None if fit is None else {
                      "precision": round(fit.tune.precision, 4),
                      "hit_rate": round(fit.tune.hit_rate, 4)}}
    threshold = fit.threshold if fit is not None else 0.5
    verifier = replace(stamp, weights=weights, bias=bias, threshold=threshold,
                       trained_on=trained_on)
    return Trained(verifier, fit, len(chosen))


def _best_fit(scored: Sequence[Outcome], options: TrainOptions) -> Fit | None:
    """The operating point for ``options.precision``; when no threshold holds it, the one for
    the highest precision that one does (in steps of half a point), so the weights still ship
    with a usable threshold and ``trained_on`` says what it reached."""
    target = options.precision
    while target > 0.5:
        fit = fit_threshold(scored, target, options.min_hits)
        if fit is not None:
            return replace(fit, rule="verifier")
        target = round(target - 0.005, 4)
    return None


def _candidate(o: Outcome, min_cosine: float) -> bool:
    return o.kind != "exact" and not o.reason and o.cosine >= min_cosine


def _row(a: Profile, b: Profile, cosine: float) -> Row:
    return features(a, b, compare(a, b), cosine)
