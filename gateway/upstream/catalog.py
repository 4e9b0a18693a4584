"""The model catalog: public model names and tiers mapped to their deployments.

Several deployments may share one public name: that is a failover group. A tier (``cheap``,
``reasoning``, ...) groups every deployment configured with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.core.answer import Deployment
from gateway.core.config import Settings
from gateway.core.errors import ModelNotFound

AUTO = "auto"


class Catalog:
    def __init__(self, deployments: Sequence[Deployment]) -> None:
        self.deployments = tuple(deployments)
        self.by_name: dict[str, list[Deployment]] = {}
        self.by_tier: dict[str, list[Deployment]] = {}
        for d in self.deployments:
            self.by_name.setdefault(d.model.name, []).append(d)
            self.by_tier.setdefault(d.tier, []).append(d)

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        providers = {p.name: p for p in settings.providers}
        return cls([Deployment(m, providers[m.provider]) for m in settings.models])

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(self.by_tier)

    def named(self, model: str) -> list[Deployment]:
        """The failover group behind a public model name."""
        group = self.by_name.get(model)
        if group is None:
            raise ModelNotFound(
                f"The model '{model}' does not exist on this gateway; "
                f"GET /v1/models lists the models it serves.",
                param="model",
            )
        return group

    def tier(self, tier: str) -> list[Deployment]:
        return self.by_tier.get(tier, [])

    def public_names(self) -> Mapping[str, str]:
        """Each public model name with the provider of its first deployment."""
        return {name: group[0].provider.name for name, group in self.by_name.items()}
