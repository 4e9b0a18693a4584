"""The learned policy: the cheapest tier whose estimated acceptability reaches the target.

``LearnedPolicy.decide(evidence, vector, tenant, may_explore=...)`` first lets the intent
policy (``ThresholdPolicy``, the prior) decide, turns its tier into a prior over the tiers
(its tier and the stronger ones acceptable, the cheaper ones less so), asks the ``Learner``
for each tier's estimate, and picks the cheapest tier (by ``costs``, from the model prices)
whose estimate reaches ``quality_target`` times the best estimate. With no evidence it
returns the intent decision unchanged. A seeded share ``explore_share`` of decisions that
``may_explore`` (never for a tenant past its budget) go to another tier instead, so a region
where a tier once failed is tried again now and then. Cheap-first escalation stays on.
Touches nothing: the learner owns its memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from gateway.routing.classifier import FloatArray
from gateway.routing.learned.learner import Learner
from gateway.routing.policy import Decision, Evidence, Policy
from gateway.routing.settings import LearningSettings, TierPlan


class PricedModel(Protocol):
    """What ``tier_costs`` reads of a model (``gateway.config.ModelSettings`` fits)."""

    @property
    def tier(self) -> str: ...
    @property
    def input_price_per_mtok(self) -> float: ...
    @property
    def output_price_per_mtok(self) -> float: ...


def tier_costs(models: Iterable[PricedModel]) -> dict[str, float]:
    """Each tier's cost: its cheapest model's input plus output price per million tokens."""
    raise NotImplementedError


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

    def decide(
        self, evidence: Evidence, vector: FloatArray, tenant: str | None = None, *,
        may_explore: bool = True,
    ) -> Decision:
        """The decision for one prompt (see the module docstring); never fails."""
        raise NotImplementedError
