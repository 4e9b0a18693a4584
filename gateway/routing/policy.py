"""Turning route scores into a decision: the ``Policy`` seam and the fitted-threshold policy.

A ``Policy`` receives the ``Evidence`` for one prompt (the shortlisted routes with their scores,
the calibrated confidence of the best one and its margin over the runner-up) and returns a
``Decision``: the route (or none), the tier, and why. ``ThresholdPolicy`` applies the
thresholds ``gateway routes fit`` wrote into the routes file; a learned policy can replace it
without touching the scorer or the request path.

``ThresholdPolicy`` decides, in order:

1. best score under ``in_scope``: no route applies → the default tier (``out_of_scope``);
2. confidence at or over the route's threshold and margin at or over ``margin`` → the best
   route's tier (``confident``);
3. otherwise the prompt sits between the best route and the runner-up (``ambiguous``) and the
   ambiguity policy picks: ``cheap_first`` the cheaper of their tiers (a failed check then
   escalates), ``strongest`` the stronger, ``default_tier`` the default tier.

A learned policy (``gateway.routing.learned.policy``) wraps this one as its prior; its
decisions carry a ``LearnedNote`` (each tier's ``TierEstimate``, whether it explored, and the
tier the intent routes chose) and the reason ``learned`` or ``explored``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.core.routing_settings import TierPlan
from gateway.routing.routes import CACHE_MODES, Calibration, RouteSet


class Reason(enum.StrEnum):
    CONFIDENT = "confident"
    AMBIGUOUS = "ambiguous"
    OUT_OF_SCOPE = "out_of_scope"
    NO_EMBEDDING = "no_embedding"
    LEARNED = "learned"
    EXPLORED = "explored"


@dataclass(frozen=True, slots=True)
class RouteScore:
    """One shortlisted route: its score, nearest-example similarity and head probability."""

    route: str
    tier: str
    score: float
    similarity: float
    probability: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a policy decides from: routes best first, the best one's confidence and margin,
    and the head's probability for the routes file's out-of-scope examples (0 without any)."""

    ranked: tuple[RouteScore, ...]
    confidence: float
    margin: float
    outside: float = 0.0

    @property
    def best(self) -> RouteScore:
        return self.ranked[0]


@dataclass(frozen=True, slots=True)
class TierEstimate:
    """One tier's estimated probability of an acceptable answer for a prompt, and what it
    rests on: ``evidence`` the decayed, similarity-weighted outcome weight of the neighbours
    seen on that tier, ``count`` how many neighbours that is."""

    p: float
    evidence: float
    count: int


@dataclass(frozen=True, slots=True)
class LearnedNote:
    """How the learned policy reached a decision: each tier's estimate (cheapest first), the
    tier the intent routes chose (the prior), and whether this decision explored. ``decided``:
    each tier's estimate before any bias correction, what the outcome of the tier served is
    scored against (``Learner.bias``); empty when the decision explored."""

    estimates: tuple[tuple[str, TierEstimate], ...]
    prior_tier: str
    explored: bool = False
    decided: tuple[tuple[str, float], ...] = ()

    @property
    def count(self) -> int:
        """How many past outcomes the estimates rest on, over all tiers."""
        return sum(e.count for _, e in self.estimates)

    def estimate(self, tier: str) -> TierEstimate | None:
        return next((e for t, e in self.estimates if t == tier), None)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a prompt goes and why; ``route`` is None when no route applies."""

    route: str | None
    tier: str
    reason: Reason
    detail: str
    confidence: float | None = None
    score: float | None = None
    margin: float | None = None
    ranked: tuple[RouteScore, ...] = ()
    cache: str = "semantic"
    escalate: bool = True
    learned: LearnedNote | None = None
    """Set when the learned policy decided (None: the intent routes alone decided)."""

    @property
    def summary(self) -> str:
        """``reason (detail)``: the reason token first, so a header stays machine-readable."""
        return f"{self.reason.value} ({self.detail})" if self.detail else self.reason.value


def fallback(tier: str, reason: Reason, detail: str, *, escalate: bool = True) -> Decision:
    """A decision that did not consult the routes (no vector, routing unavailable)."""
    return Decision(None, tier, reason, detail, escalate=escalate)


class Policy(Protocol):
    """Decides a prompt's route and tier from its evidence; must not fail."""

    def decide(self, evidence: Evidence) -> Decision: ...


class ThresholdPolicy:
    """The fitted thresholds of a routes file's ``[calibration]`` (see the module docstring)."""

    def __init__(
        self, routes: RouteSet, plan: TierPlan, ambiguity: str = "cheap_first", *,
        escalation: bool = True,
    ) -> None:
        self.routes = {r.name: r for r in routes.routes}
        self.calibration: Calibration = routes.calibration
        self.plan = plan
        self.ambiguity = ambiguity
        self.escalation = escalation

    def decide(self, evidence: Evidence) -> Decision:
        c, best = self.calibration, evidence.best
        if best.score < c.in_scope:
            return self._decision(
                evidence, None, self.plan.default, Reason.OUT_OF_SCOPE,
                f"best {best.route} {best.score:.3f} < in_scope {c.in_scope:.3f}",
            )
        threshold = c.threshold_for(best.route)
        if evidence.confidence >= threshold and evidence.margin >= c.margin:
            return self._decision(
                evidence, best.route, best.tier, Reason.CONFIDENT,
                f"confidence {evidence.confidence:.3f} >= {threshold:.3f}",
            )
        return self._ambiguous(evidence)

    def _ambiguous(self, evidence: Evidence) -> Decision:
        pair = evidence.ranked[:2]
        names = " vs ".join(f"{r.route} {r.score:.3f}" for r in pair)
        if self.ambiguity == "default_tier":
            tier = self.plan.default
        else:
            tiers = sorted({r.tier for r in pair}, key=self.plan.rank)
            tier = tiers[0] if self.ambiguity == "cheap_first" else tiers[-1]
        # Either route may be the right one: cache as strictly as the stricter of the two asks.
        cache = max((self.routes[r.route].cache for r in pair), key=CACHE_MODES.index)
        return self._decision(
            evidence, evidence.best.route, tier, Reason.AMBIGUOUS,
            f"{names}, confidence {evidence.confidence:.3f}; {self.ambiguity} -> {tier}", cache,
        )

    def _decision(
        self, evidence: Evidence, route: str | None, tier: str, reason: Reason, detail: str,
        cache: str | None = None,
    ) -> Decision:
        if cache is None:
            found = self.routes.get(route) if route is not None else None
            cache = found.cache if found is not None else "semantic"
        return Decision(
            route=route,
            tier=tier,
            reason=reason,
            detail=detail,
            confidence=evidence.confidence,
            score=evidence.best.score,
            margin=evidence.margin,
            ranked=evidence.ranked,
            cache=cache,
            escalate=self.escalation,
        )
