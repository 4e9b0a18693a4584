"""The learned policy: the cheapest tier whose estimated acceptability reaches the threshold.

``LearnedPolicy.decide(evidence, vector, tenant, may_explore=...)`` first lets the intent
policy (``ThresholdPolicy``, the prior) decide, turns its tier into a prior over the tiers
(its tier and the stronger ones acceptable, the cheaper ones less so), asks the ``Learner``
for each tier's estimate, and picks the cheapest tier (by ``costs``, from the model prices)
whose estimate reaches ``threshold`` times the best estimate (or, with ``relative_to =
"prior"``, times the prior's ``PRIOR_ACCEPTABLE``; with ``"gain"``, the best estimate less
``1 - threshold`` of ``PRIOR_ACCEPTABLE``: a fixed number of answers given up per prompt, which
is how a router ranks prompts to lose the fewest answers for its calls; it needs the dearest
tier's estimate unbiased, which the learner's ``escalated_weight`` of 0 keeps it). With no
evidence it returns the
intent decision unchanged. With ``bias_correction`` each cheaper tier's estimate is first
shifted by its measured bias (how far the outcomes that came back ran from the estimates it was
chosen with: ``Learner.bias``, scored against the uncorrected estimates the note carries as
``decided``); with a ``margin`` a cheaper tier qualifies only with its estimate lowered by
that many standard errors, so a tier judged on few outcomes near the prompt is chosen only
when it is clearly good. The threshold is ``quality_target``; with ``calibration_window`` above
0 (off by default) it calibrates itself: after each learned decision it is set to the lowest
that, over the last ``calibration_window`` prompts, would give up no more estimated quality than
``quality_target`` allows (5% of the best tier's for 0.95), so the same target holds on data
whose base rates differ (an easier mix of prompts sends more to the cheap tier). A seeded share
``explore_share`` of decisions that ``may_explore`` (never for a tenant past its budget) go to
another tier instead, so a region where a tier once failed is tried again now and then.
Cheap-first escalation stays on. Touches nothing: the learner owns its memory; the threshold
lives in this process only.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Protocol

import numpy as np

from gateway.core.routing_settings import LearningSettings, TierPlan
from gateway.routing.classifier import FloatArray
from gateway.routing.learned.learner import Learner
from gateway.routing.policy import Decision, Evidence, LearnedNote, Policy, Reason, TierEstimate

log = logging.getLogger(__name__)

PRIOR_ACCEPTABLE = 0.9
"""The prior acceptability of the intent decision's tier and every stronger one."""
CALIBRATE_AFTER = 50
"""Prompts decided before the calibrated threshold replaces ``quality_target``."""
MIN_THRESHOLD = 0.5
"""The calibrated threshold never drops below this: a tier half as good never qualifies."""
PRIOR_SHORTFALL = 0.95
"""A cheaper tier's prior is this share of what the target asks: just short of it, so no
target picks it cold, and a few good outcomes nearby are enough to pick it."""


class PricedModel(Protocol):
    """What ``tier_costs`` reads of a model (``gateway.core.config.ModelSettings`` fits)."""

    @property
    def tier(self) -> str: ...
    @property
    def input_price_per_mtok(self) -> float: ...
    @property
    def output_price_per_mtok(self) -> float: ...


def tier_costs(models: Iterable[PricedModel]) -> dict[str, float]:
    """Each tier's cost: its cheapest model's input plus output price per million tokens."""
    costs: dict[str, float] = {}
    for m in models:
        price = m.input_price_per_mtok + m.output_price_per_mtok
        costs[m.tier] = min(costs.get(m.tier, price), price)
    return costs


def tier_prior(
    plan: TierPlan, tiers: Iterable[str], chosen: str, target: float
) -> dict[str, float]:
    """What the intent decision for ``chosen`` says of each tier before any outcome."""
    low = PRIOR_ACCEPTABLE * target * PRIOR_SHORTFALL
    rank = plan.rank(chosen)
    return {t: PRIOR_ACCEPTABLE if plan.rank(t) >= rank else low for t in tiers}


def lower_bound(e: TierEstimate, margin: float, prior_weight: float) -> float:
    """``e.p`` less ``margin`` standard errors of a rate measured on ``prior_weight +
    e.evidence`` outcomes: the estimate a tier has to qualify with when it rests on little."""
    if margin <= 0.0:
        return e.p
    p = min(1.0, max(0.0, e.p))
    return p - margin * math.sqrt(p * (1.0 - p) / (prior_weight + e.evidence))


def flip_target(cheap: float, best: float, relative_to: str) -> float:
    """The highest quality target at which a cheaper tier estimated at ``cheap`` (after any
    margin) still qualifies beside a ``best`` estimate, in the units ``relative_to`` gives the
    target: ``cheap / best``, ``cheap / PRIOR_ACCEPTABLE``, or with ``gain`` one less the
    shortfall in units of ``PRIOR_ACCEPTABLE``. The one statement of the threshold rule: the
    decision (``cheapest_reaching``), the offline ranking, the calibration and the bias band
    all read it, so they cannot disagree on where a prompt flips."""
    if relative_to == "gain":
        return 1.0 - (best - cheap) / PRIOR_ACCEPTABLE
    if relative_to == "prior":
        return cheap / PRIOR_ACCEPTABLE
    return cheap / best if best > 0 else 1.0


def cheapest_reaching(
    estimates: Mapping[str, TierEstimate], order: Iterable[str], target: float,
    margin: float = 0.0, prior_weight: float = 1.0, relative_to: str = "best",
) -> str:
    """The first tier of ``order`` (cheapest first) whose estimate, lowered by ``margin``
    standard errors (``lower_bound``), still qualifies at ``target`` beside the best estimate
    (``flip_target`` reaches it); the last (dearest) tier when none does."""
    tiers = tuple(order)
    best = max(e.p for e in estimates.values())
    return next((t for t in tiers[:-1] if flip_target(
        lower_bound(estimates[t], margin, prior_weight), best, relative_to) >= target),
        tiers[-1])


class LearnedPolicy:
    """Decides from the learner's estimates, with ``prior`` (the intent policy) as the prior."""

    def __init__(
        self, prior: Policy, learner: Learner, plan: TierPlan, settings: LearningSettings,
        costs: Mapping[str, float] | None = None, *, seed: int | None = None,
    ) -> None:
        self.prior = prior
        self.learner = learner
        self.plan = plan
        self.settings = settings
        self.costs = dict(costs or {})
        # Cheapest first by price; the plan's order breaks ties and places unpriced tiers.
        self.order = tuple(sorted(
            plan.order, key=lambda t: (self.costs.get(t, 0.0), plan.rank(t))
        ))
        self._rng = random.Random(settings.seed if seed is None else seed)
        self.threshold = settings.quality_target
        """The per-prompt threshold: a tier qualifies at this share of the reference (or,
        with ``gain``, short of the best estimate by at most ``1 -`` this of 0.9)."""
        self._window = (CalibrationWindow(settings.calibration_window)
                        if settings.calibration_window > 0 and len(self.order) > 1 else None)

    def decide(
        self, evidence: Evidence, vector: FloatArray, tenant: str | None = None, *,
        may_explore: bool = True,
    ) -> Decision:
        """The decision for one prompt (see the module docstring); never fails."""
        intent = self.prior.decide(evidence)
        return self.refine(intent, vector, tenant, may_explore=may_explore)

    def refine(
        self, intent: Decision, vector: FloatArray, tenant: str | None = None, *,
        may_explore: bool = True,
    ) -> Decision:
        """``intent`` (the prior's decision) revised by the learned estimates."""
        if intent.tier not in self.order:
            return intent  # a tier the plan does not order: nothing to compare it with
        target = self.threshold
        prior = tier_prior(self.plan, self.order, intent.tier, target)
        try:
            estimates = self.learner.estimate(vector, self.order, tenant, prior)
        except Exception:  # a broken estimate must not fail the request: the routes decide
            log.exception("learned policy: estimate failed; the intent decision stands")
            return intent
        if not any(e.count for e in estimates.values()):
            return intent  # nothing learned near this prompt: decide exactly as the routes do
        raw = {t: e.p for t, e in estimates.items()}
        if self.settings.bias_correction:
            estimates = self._corrected(estimates)
        s = self.settings
        tier = cheapest_reaching(estimates, self.order, target, s.margin, s.prior_weight,
                                 s.relative_to)
        decided = self._measured(raw, estimates, target)
        self._calibrate(estimates)
        explored = (
            may_explore and len(self.order) > 1
            and self._rng.random() < self.settings.explore_share
        )
        if explored:
            tier = self._rng.choice([t for t in self.order if t != tier])
        note = LearnedNote(tuple((t, estimates[t]) for t in self.order), intent.tier, explored,
                           () if explored else decided)
        return replace(
            intent, tier=tier, reason=Reason.EXPLORED if explored else Reason.LEARNED,
            detail=_detail(note, tier, target, intent, self.settings.relative_to),
            learned=note,
        )

    def _measured(self, raw: Mapping[str, float], estimates: Mapping[str, TierEstimate],
                  target: float) -> tuple[tuple[str, float], ...]:
        """The uncorrected estimates that the outcomes of this decision are to be scored
        against: every tier's, or with ``bias_band`` only the dearest tier's and those of the
        cheaper tiers whose criterion lay within the band of ``target`` (a marginal choice)."""
        s = self.settings
        if s.bias_band <= 0.0:
            return tuple((t, raw[t]) for t in self.order)
        best = max(e.p for e in estimates.values())
        return tuple(
            (t, raw[t]) for t in self.order
            if t == self.order[-1] or abs(flip_target(
                lower_bound(estimates[t], s.margin, s.prior_weight), best, s.relative_to)
                - target) <= s.bias_band
        )

    def _corrected(self, estimates: Mapping[str, TierEstimate]) -> dict[str, TierEstimate]:
        """Each cheaper tier's estimate shifted by how far the outcomes ran from the estimates
        it was chosen with (it is chosen where its estimate is high, which flatters it). Not
        the dearest tier: it is the safety net, and what it is measured on (prompts the cheaper
        tiers did not take) is not the prompts a cheaper tier is weighed for."""
        return {t: replace(e, p=min(1.0, max(0.0, e.p + self.learner.bias(t))))
                if t != self.order[-1] else e for t, e in estimates.items()}

    def _calibrate(self, estimates: Mapping[str, TierEstimate]) -> None:
        """Remember this prompt's estimates and set the threshold to the lowest that, over the
        last ``calibration_window`` prompts, gives up no more estimated quality (the best
        estimate minus the cheapest tier's, on prompts sent to the cheapest tier) than
        ``quality_target`` allows: (1 - target) x the sum of the best estimates."""
        window = self._window
        if window is None:
            return
        best = max(e.p for e in estimates.values())
        cheapest = estimates[self.order[0]].p
        # In the units the threshold is read in (``relative_to``), or the calibrated threshold
        # would be a ratio read as a shortfall.
        window.add(flip_target(cheapest, best, self.settings.relative_to), best - cheapest, best)
        if window.size >= min(CALIBRATE_AFTER, len(window.ratio)):
            self.threshold = max(MIN_THRESHOLD, window.threshold(self.settings.quality_target))


class CalibrationWindow:
    """The last prompts' (``flip_target``, quality given up if sent to the cheapest tier, best
    estimate) in a ring of numpy arrays."""

    def __init__(self, size: int) -> None:
        self.ratio = np.zeros(size)
        self.gap = np.zeros(size)
        self.best = np.zeros(size)
        self.size = 0
        self._next = 0

    def add(self, ratio: float, gap: float, best: float) -> None:
        i = self._next
        self.ratio[i], self.gap[i], self.best[i] = ratio, max(0.0, gap), best
        self._next = (i + 1) % len(self.ratio)
        self.size = min(self.size + 1, len(self.ratio))

    def threshold(self, target: float) -> float:
        ratio, gap = self.ratio[: self.size], self.gap[: self.size]
        order = np.argsort(-ratio, kind="stable")
        given_up = np.cumsum(gap[order])
        budget = (1.0 - target) * float(self.best[: self.size].sum())
        fits = int(np.searchsorted(given_up, budget, side="right"))
        return float(ratio[order[fits - 1]]) if fits > 0 else 1.0


def _detail(note: LearnedNote, tier: str, target: float, intent: Decision,
            relative_to: str) -> str:
    shown = ", ".join(f"{t} {e.p:.2f} (n={e.count})" for t, e in note.estimates)
    if note.explored:
        why = "explored"
    elif relative_to == "gain":
        why = f"cheapest short of the best by at most {(1.0 - target) * PRIOR_ACCEPTABLE:.2f}"
    else:
        why = f"cheapest within {target:.2f} of the {relative_to}"
    return f"{shown}; {why} -> {tier}; intent: {intent.summary} -> {intent.tier}"
