"""The router: a prompt vector in, a ``Decision`` out, and the headers that explain it.

``Router.route(vector)`` scores the routes (``classifier``), turns the best score and its margin
into a calibrated confidence (the routes file's ``[calibration]``), and lets the ``Policy``
decide. It never fails: no vector (the embedder is down), a vector of the wrong size, or routing
without an embedder at all all give the default tier, with the reason in the decision.

``build_router`` assembles one from a routes file and its utterance vectors; ``embed_routes``
gets those vectors through the on-disk cache. Touches only the cache directory it is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.core.routing_settings import TierPlan
from gateway.routing.classifier import (
    SHORTLIST,
    FloatArray,
    HeadOptions,
    IntArray,
    RouteClassifier,
    Scores,
    head_key,
    load_or_train_head,
)
from gateway.routing.policy import (
    Decision,
    Evidence,
    Policy,
    Reason,
    RouteScore,
    ThresholdPolicy,
    fallback,
)
from gateway.routing.routes import Calibration, RouteSet
from gateway.routing.vectors import Embed, VectorCache, embed_cached

log = logging.getLogger(__name__)

ROUTE_HEADER = "x-gateway-route"
SCORE_HEADER = "x-gateway-route-score"
MARGIN_HEADER = "x-gateway-route-margin"
TIER_HEADER = "x-gateway-tier"
REASON_HEADER = "x-gateway-route-reason"


def confidence(c: Calibration, score: float, margin: float, log_prob: float) -> float:
    """The calibrated probability that the best route is right (the head's, when unfitted)."""
    if c.weights is None:
        return math.exp(log_prob)
    z = c.weights[0] * score + c.weights[1] * margin + c.weights[2] * log_prob + c.bias
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


class Router:
    """Routes prompt vectors for one routes file; read-only once built."""

    def __init__(
        self, routes: RouteSet, classifier: RouteClassifier | None, plan: TierPlan,
        policy: Policy | None = None, *, model: str = "", ambiguity: str = "cheap_first",
        escalation: bool = True,
    ) -> None:
        self.routes = routes
        self.classifier = classifier
        self.plan = plan
        self.ambiguity = ambiguity
        self.escalation = escalation
        self.policy: Policy = policy or ThresholdPolicy(routes, plan, ambiguity,
                                                        escalation=escalation)
        self.model = model
        self._names = routes.names
        self._tiers = tuple(r.tier for r in routes.routes)
        self._n = len(routes.routes)  # a class index of _n means the out-of-scope examples

    def with_calibration(self, calibration: Calibration) -> Router:
        """The same routes and classifier under another calibration, with the threshold
        policy (for fitting and evaluating)."""
        return Router(self.routes.with_calibration(calibration), self.classifier, self.plan,
                      model=self.model, ambiguity=self.ambiguity, escalation=self.escalation)

    def evidence(self, vector: FloatArray) -> Evidence:
        """Scores and confidence for ``vector`` (requires a classifier and a matching size)."""
        assert self.classifier is not None
        c = self.routes.calibration
        return self.evidence_from(self.classifier.score(vector, c.blend), c)

    def evidence_from(self, scores: Scores, c: Calibration) -> Evidence:
        ranked: list[RouteScore] = []
        outside = 0.0
        for r, s, k, lp in zip(scores.routes.tolist(), scores.scores.tolist(),
                                scores.similarity.tolist(), scores.log_prob.tolist(), strict=True):
            if r >= self._n:
                outside = math.exp(lp)
            else:
                ranked.append(RouteScore(self._names[r], self._tiers[r], s, k, math.exp(lp)))
        best = ranked[0]
        margin = best.score - ranked[1].score if len(ranked) > 1 else best.score
        log_prob = math.log(max(best.probability, 1e-30))
        return Evidence(tuple(ranked), confidence(c, best.score, margin, log_prob), margin,
                        outside)

    def route(self, vector: FloatArray | None) -> Decision:
        """The decision for a prompt's vector; None (no embedding) gives the default tier."""
        escalate = self.escalation
        if self.classifier is None:
            return fallback(self.plan.default, Reason.NO_EMBEDDING, "routing has no embedder",
                            escalate=escalate)
        if vector is None:
            return fallback(self.plan.default, Reason.NO_EMBEDDING, "embedder unavailable",
                            escalate=escalate)
        if vector.shape != (self.classifier.dim,):
            log.warning("prompt vector has shape %s, routes have %d dims: check the embedder "
                        "model", vector.shape, self.classifier.dim)
            return fallback(self.plan.default, Reason.NO_EMBEDDING, "vector size mismatch",
                            escalate=escalate)
        return self.policy.decide(self.evidence(np.asarray(vector, dtype=np.float32)))


def decision_headers(decision: Decision) -> dict[str, str]:
    """The response headers that explain a routing decision (ASCII; empty values left out)."""
    headers = {
        ROUTE_HEADER: decision.route or "none",
        TIER_HEADER: decision.tier,
        REASON_HEADER: decision.summary.encode("ascii", "replace").decode("ascii"),
    }
    if decision.score is not None:
        headers[SCORE_HEADER] = f"{decision.score:.4f}"
    if decision.margin is not None:
        headers[MARGIN_HEADER] = f"{decision.margin:.4f}"
    return headers


def utterance_table(routes: RouteSet) -> tuple[list[str], IntArray]:
    """Every utterance in file order with the index of its route; out-of-scope examples last,
    under the index one past the last route."""
    texts: list[str] = []
    labels: list[int] = []
    for i, route in enumerate(routes.routes):
        texts += route.utterances
        labels += [i] * len(route.utterances)
    texts += routes.out_of_scope
    labels += [len(routes.routes)] * len(routes.out_of_scope)
    return texts, np.asarray(labels, dtype=np.int64)


async def embed_routes(routes: RouteSet, cache: VectorCache, embed: Embed) -> FloatArray:
    """The vectors of every utterance (file order), embedding only those not yet cached."""
    texts, _ = utterance_table(routes)
    return await embed_cached(texts, cache, embed)


def build_classifier(
    routes: RouteSet, vectors: FloatArray, *, model: str, cache_dir: Path | None,
    options: HeadOptions | None = None,
) -> RouteClassifier:
    """Train (or load the cached) head on the utterance vectors and index them."""
    _, labels = utterance_table(routes)
    options = options or HeadOptions()
    pairs: list[tuple[str, Sequence[str]]] = [(r.name, r.utterances) for r in routes.routes]
    classes = len(routes.routes)
    if routes.out_of_scope:
        pairs.append(("\0out_of_scope", routes.out_of_scope))
        classes += 1
    key = head_key(model, pairs, options)
    head = load_or_train_head(cache_dir, key, vectors, labels, classes, options)
    # One more shortlist place when the out-of-scope class may take one.
    shortlist = SHORTLIST + classes - len(routes.routes)
    return RouteClassifier(vectors, labels, head, shortlist=shortlist)


def build_router(
    routes: RouteSet, vectors: FloatArray | None, plan: TierPlan, *, model: str,
    cache_dir: Path | None, ambiguity: str = "cheap_first", escalation: bool = True,
) -> Router:
    """A router with the fitted-threshold policy; ``vectors`` None means no embedder."""
    if routes.calibration.model and model and routes.calibration.model != model:
        log.warning("%s was calibrated with %s, routing uses %s: run `gateway routes fit`",
                    routes.source, routes.calibration.model, model)
    classifier = (
        build_classifier(routes, vectors, model=model, cache_dir=cache_dir)
        if vectors is not None else None
    )
    return Router(routes, classifier, plan, model=model, ambiguity=ambiguity,
                  escalation=escalation)
