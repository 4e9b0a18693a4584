"""Fitting a routes file's ``[calibration]`` on labelled examples, and measuring a router.

Labelled examples are JSON lines ``{"text": ..., "route": ...}``; ``"route": null`` marks a
prompt no route should take. ``fit_calibration`` chooses, on those examples:

- ``blend``: the weight of the head's log-probability in a route's score (best top-1 accuracy);
- ``weights``/``bias``: a logistic model from (best score, margin, best log-probability) to the
  probability that the best route is right, so that confidence means what it says;
- ``in_scope``: the best-score threshold under which no route applies, keeping ``coverage`` of
  the in-scope examples (only when the data has out-of-scope examples);
- ``threshold`` and ``margin``: the pair that routes the most examples at ``target_precision``;
- ``route_thresholds``: a route's own threshold where it has enough examples to need one.

``evaluate`` replays examples through a router and reports accuracy, per-route precision and
recall, abstention, out-of-scope rejection and the most frequent confusions. Reads the examples
file; writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.core.toml_table import ConfigError, read_text, text_lines
from gateway.routing.classifier import Array, FloatArray, IntArray, RouteClassifier
from gateway.routing.policy import Reason
from gateway.routing.router import Router
from gateway.routing.routes import Calibration

log = logging.getLogger(__name__)

BLENDS = (0.0, 0.03, 0.1, 0.3, 1.0)
_GRID = 101


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    route: str | None


def read_examples(path: Path) -> list[Example]:
    """Labelled examples from JSON lines; ``ConfigError`` names the file and line."""
    lines = text_lines(read_text(path))
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        text, route = (item.get("text"), item.get("route")) if isinstance(item, dict) else (0, 0)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}:{n}: expected a non-empty string \"text\"")
        if route is not None and (not isinstance(route, str) or not route):
            raise ConfigError(f"{path}:{n}: expected \"route\" to be a route name or null")
        out.append(Example(text.strip(), route))
    if not out:
        raise ConfigError(f"{path}: no examples")
    return out


def route_indices(examples: Sequence[Example], names: Sequence[str], source: str) -> IntArray:
    """Each example's route index (-1: out of scope); an unknown route name is an error."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({e.route for e in examples if e.route is not None and e.route not in index})
    if unknown:
        raise ConfigError(f"{source}: routes not in the routes file: {', '.join(unknown[:5])}")
    return np.asarray([-1 if e.route is None else index[e.route] for e in examples], np.int64)


@dataclass(frozen=True, slots=True)
class Scored:
    """The shortlist of every example: route indices, similarities, head log-probabilities.

    A route index of ``n_routes`` is the out-of-scope examples' class: never a candidate.
    """

    truth: IntArray
    routes: IntArray
    sims: FloatArray
    log_probs: FloatArray
    n_routes: int


@dataclass(frozen=True, slots=True)
class Ranked:
    """Per example, under one blend: best route, its score, margin and log-probability."""

    top: IntArray
    score: FloatArray
    margin: FloatArray
    log_prob: FloatArray

    @property
    def features(self) -> FloatArray:
        return np.stack([self.score, self.margin, self.log_prob], axis=1)


def score_examples(
    classifier: RouteClassifier, vectors: FloatArray, truth: IntArray, n_routes: int
) -> Scored:
    parts = [classifier.score(v, 0.0) for v in vectors]
    return Scored(
        truth,
        np.stack([p.routes for p in parts]),
        np.stack([p.similarity for p in parts]),
        np.stack([p.log_prob for p in parts]),
        n_routes,
    )


def rank(scored: Scored, blend: float) -> Ranked:
    scores = scored.sims + np.float32(blend) * scored.log_probs
    scores[scored.routes >= scored.n_routes] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(len(scores))
    best = order[:, 0]
    s1 = scores[rows, best]
    s2 = scores[rows, order[:, 1]] if scores.shape[1] > 1 else np.full_like(s1, -np.inf)
    margin = np.where(np.isfinite(s2), s1 - s2, s1)  # a lone route: margin = its score
    return Ranked(scored.routes[rows, best], s1, margin, scored.log_probs[rows, best])


def best_blend(scored: Scored, blends: Sequence[float] = BLENDS) -> float:
    """The blend with the best top-1 accuracy on in-scope examples (ties: the first)."""
    inside = scored.truth >= 0
    if not inside.any():
        return 0.1
    accuracy = [float((rank(scored, b).top[inside] == scored.truth[inside]).mean())
                for b in blends]
    return blends[int(np.argmax(accuracy))]


def fit_logistic(x: Array, y: Array, l2: float = 1e-3) -> tuple[FloatArray, float]:
    """Logistic regression by Newton's method; returns (weights, bias)."""
    design = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    w = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -60, 60)))
        grad = design.T @ (p - y) + penalty * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1].astype(np.float32), float(w[-1])


def _precision_pass(
    conf: Array, margin: Array, correct: Array, thresholds: Array, margins: Array, target: float
) -> tuple[float, float]:
    """The (threshold, margin) accepting the most examples at ``target`` precision."""
    best = (-1, 1.0, float(margins[0]))
    for m in margins:
        ok = margin >= m
        for t in thresholds:
            accepted = ok & (conf >= t)
            n = int(accepted.sum())
            if n and correct[accepted].mean() >= target and n > best[0]:
                best = (n, float(t), float(m))
    return best[1], best[2]


def _route_thresholds(
    top: Array, conf: Array, correct: Array, gate: Array,
    names: Sequence[str], threshold: float, target: float, minimum: int,
) -> dict[str, float]:
    """Per-route thresholds where a route's own examples need a different one."""
    out: dict[str, float] = {}
    grid = np.linspace(0.0, 1.0, _GRID)
    for r, name in enumerate(names):
        mine = gate & (top == r)
        if mine.sum() < minimum:
            continue
        good = [t for t in grid if (sel := mine & (conf >= t)).sum() >= minimum // 2
                and correct[sel].mean() >= target]
        own = float(good[0]) if good else 1.0
        if abs(own - threshold) > 0.02:
            out[name] = round(own, 4)
    return out


@dataclass(frozen=True, slots=True)
class FitOptions:
    target_precision: float = 0.9
    coverage: float = 0.95
    min_route_examples: int = 20
    blends: tuple[float, ...] = BLENDS


def fit_calibration(
    scored: Scored, names: Sequence[str], options: FitOptions, *, model: str, source: str
) -> Calibration:
    """Fit every ``[calibration]`` value on scored examples (see the module docstring)."""
    blend = best_blend(scored, options.blends)
    r = rank(scored, blend)
    correct = (r.top == scored.truth).astype(np.float64)
    weights, bias = fit_logistic(r.features, correct)
    conf = 1.0 / (1.0 + np.exp(-np.clip(r.features @ weights + bias, -60, 60)))
    inside = scored.truth >= 0
    in_scope = 0.0
    if (~inside).any() and inside.any():
        in_scope = float(np.quantile(r.score[inside], 1.0 - options.coverage))
    gate = r.score >= in_scope
    thresholds = np.linspace(0.0, 1.0, _GRID)
    quantiles = [0.02, 0.05, 0.1, 0.2, 0.3]
    margins = np.unique([0.0, *(np.quantile(r.margin[gate], quantiles) if gate.any() else [])])
    threshold, margin = _precision_pass(conf[gate], r.margin[gate], correct[gate], thresholds,
                                        margins, options.target_precision)
    if threshold >= 1.0:
        log.warning("no threshold reaches precision %.2f on %s: nothing will be confident",
                    options.target_precision, source)
    accepted_margin = gate & (r.margin >= margin)
    per_route = _route_thresholds(r.top, conf, correct, accepted_margin, names, threshold,
                                  options.target_precision, options.min_route_examples)
    return Calibration(
        threshold=round(threshold, 4), margin=round(margin, 4), in_scope=round(in_scope, 4),
        blend=blend, weights=(float(weights[0]), float(weights[1]), float(weights[2])),
        bias=bias, route_thresholds=per_route, target_precision=options.target_precision,
        model=model, fitted_on=f"{source} ({len(scored.truth)} examples)",
    )


@dataclass(frozen=True, slots=True)
class RouteStats:
    route: str
    precision: float
    recall: float
    support: int


@dataclass(frozen=True, slots=True)
class EvalReport:
    """How a router does on labelled examples (top-1 figures ignore the thresholds)."""

    examples: int
    out_of_scope: int
    accuracy: float
    confident_precision: float
    abstention: float
    oos_rejected: float
    oos_not_confident: float
    in_scope_kept: float
    tier_accuracy: float | None
    """None when every route and the default share one tier: any decision has the right one."""
    oos_rejected_at_95: float | None
    per_route: tuple[RouteStats, ...]
    confusion: tuple[tuple[str, str, int], ...]


def _per_route(top: Array, truth: Array, names: Sequence[str]) -> tuple[RouteStats, ...]:
    """Precision and recall per route over in-scope examples: an out-of-scope prompt has no
    right route, so its top-1 counts against no route's precision (``oos_*`` measure it)."""
    stats = []
    inside = truth >= 0
    for r, name in enumerate(names):
        predicted, actual = (top == r) & inside, truth == r
        hits = int((predicted & actual).sum())
        stats.append(RouteStats(
            name,
            hits / int(predicted.sum()) if predicted.any() else 0.0,
            hits / int(actual.sum()) if actual.any() else 0.0,
            int(actual.sum()),
        ))
    return tuple(stats)


def _confusion(top: Array, truth: Array, names: Sequence[str], confident: Array,
               limit: int = 10) -> tuple[tuple[str, str, int], ...]:
    pairs: Counter[tuple[str, str]] = Counter()
    for t, p, c in zip(truth.tolist(), top.tolist(), confident.tolist(), strict=True):
        if t >= 0 and t != p:
            pairs[names[t], names[p]] += 1
        elif t < 0 and c:
            pairs["(out of scope)", names[p]] += 1
    return tuple((a, b, n) for (a, b), n in pairs.most_common(limit))


def _ratio(mask: Array, within: Array) -> float:
    n = int(np.sum(within))
    return float(np.sum(mask & within)) / n if n else 0.0


def evaluate(router: Router, vectors: FloatArray, truth: IntArray) -> EvalReport:
    """Replay labelled examples (their vectors and route indices) through ``router``."""
    names = router.routes.names
    index = {name: i for i, name in enumerate(names)}
    decisions = [router.policy.decide(router.evidence(v)) for v in vectors]
    top = np.asarray([index[d.ranked[0].route] for d in decisions], dtype=np.int64)
    score = np.asarray([d.ranked[0].score for d in decisions], dtype=np.float64)
    reason = np.asarray([d.reason.value for d in decisions])
    confident = reason == Reason.CONFIDENT.value
    rejected = reason == Reason.OUT_OF_SCOPE.value
    inside, outside = truth >= 0, truth < 0
    expected = [router.routes.routes[t].tier if t >= 0 else router.plan.default
                for t in truth.tolist()]
    tiers_ok = np.asarray([d.tier == e for d, e in zip(decisions, expected, strict=True)])
    one_tier = len({*(r.tier for r in router.routes.routes), router.plan.default}) == 1
    at_95 = None
    if outside.any() and inside.any():
        cut = float(np.quantile(score[inside], 0.05))
        at_95 = float((score[outside] < cut).mean())
    return EvalReport(
        examples=len(truth),
        out_of_scope=int(outside.sum()),
        accuracy=_ratio(top == truth, inside),
        confident_precision=_ratio(top == truth, confident),
        abstention=float((~confident).mean()),
        oos_rejected=_ratio(rejected, outside),
        oos_not_confident=_ratio(~confident, outside),
        in_scope_kept=_ratio(~rejected, inside),
        tier_accuracy=None if one_tier else float(tiers_ok.mean()),
        oos_rejected_at_95=at_95,
        per_route=_per_route(top, truth, names),
        confusion=_confusion(top, truth, names, confident.astype(np.int64)),
    )


def format_report(report: EvalReport, *, per_route_limit: int = 200) -> str:
    """The report as text for a terminal."""
    lines = [
        f"examples: {report.examples} ({report.out_of_scope} out of scope)",
        f"accuracy (top-1, in scope): {report.accuracy:.2%}",
        f"precision of confident decisions: {report.confident_precision:.2%}",
        f"abstention (not confident): {report.abstention:.2%}",
        f"in scope kept (not sent to the default tier): {report.in_scope_kept:.2%}",
        f"out of scope sent to the default tier: {report.oos_rejected:.2%}",
        f"out of scope not routed confidently: {report.oos_not_confident:.2%}",
        "tier accuracy (decided tier = the true route's tier): " + (
            f"{report.tier_accuracy:.2%}" if report.tier_accuracy is not None
            else "n/a (every route and the default have one tier)"),
    ]
    if report.oos_rejected_at_95 is not None:
        lines.append("out of scope rejected at 95% in-scope coverage (threshold from this "
                     f"data): {report.oos_rejected_at_95:.2%}")
    worst = sorted(report.per_route, key=lambda s: min(s.precision, s.recall))
    lines.append("")
    lines.append(f"{'route':<32} {'precision':>9} {'recall':>7} {'support':>8}")
    for s in worst[:per_route_limit]:
        lines.append(f"{s.route:<32} {s.precision:>9.2%} {s.recall:>7.2%} {s.support:>8}")
    if report.confusion:
        lines += ["", "most frequent confusions (true -> chosen: count):"]
        lines += [f"  {a} -> {b}: {n}" for a, b, n in report.confusion]
    return "\n".join(lines)
