"""The ``[routing]`` table of the main configuration, read once into ``RoutingSettings``.

``parse_routing(t, base_dir)`` reads the table (``t`` is the config module's ``Table`` for
``routing``, so every error names its key) and rejects unknown keys. Which tiers exist is known
only once the models are read: ``tier_plan`` resolves the tier names against them. Reads no
file: the routes file itself is loaded by ``gateway.routing.routes``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gateway.core.toml_table import ConfigError, Table

AMBIGUITY_POLICIES = ("cheap_first", "strongest", "default_tier")
PACKAGED_ROUTES = "routes.toml"


def packaged_routes_file() -> Path:
    """The team's default routes file, shipped as package data (``gateway/routing/routes.toml``)."""
    return Path(str(resources.files("gateway.routing").joinpath(PACKAGED_ROUTES)))


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """How ``model: "auto"`` is routed, escalated and recorded.

    ``None`` paths default under the server's ``data_dir``: the utterance vector cache in
    ``<data_dir>/routing/`` and the signal store in ``<data_dir>/signals.sqlite3``. ``None``
    tiers mean ``cheap`` then ``reasoning`` (those served), and the cheapest served tier as
    the default; ``tier_plan`` resolves them against the tiers the models define.
    """

    routes_file: Path
    aliases: tuple[str, ...] = ("auto",)
    ambiguity_policy: str = "cheap_first"
    default_tier: str | None = None
    tier_order: tuple[str, ...] | None = None
    escalation: bool = True
    context_turns: int = 2
    max_prompt_tokens: int = 160
    cache_dir: Path | None = None
    signals: bool = True
    signals_file: Path | None = None
    signals_flush_ms: float = 250.0
    signals_batch: int = 256
    signals_queue: int = 10_000

    def cache_path(self, data_dir: Path) -> Path:
        return self.cache_dir or data_dir / "routing"

    def signals_path(self, data_dir: Path) -> Path:
        return self.signals_file or data_dir / "signals.sqlite3"

    def is_alias(self, model: str) -> bool:
        """Whether a request's ``model`` asks for routing (``auto`` and configured aliases)."""
        return model in self.aliases


def _path(t: Table, name: str, base_dir: Path) -> Path | None:
    value = t.optional(name, str)
    if value is None:
        return None
    if not value:
        raise t.fail(name, "a non-empty path")
    return base_dir / Path(value).expanduser()  # an absolute path stays itself


def _tier_order(t: Table) -> tuple[str, ...] | None:
    if "tier_order" not in t.data:
        return None
    order = t.strings("tier_order")
    if not order or len(set(order)) != len(order) or not all(order):
        raise t.fail("tier_order", "a non-empty list of distinct tier names, cheapest first")
    return order


def _aliases(t: Table) -> tuple[str, ...]:
    aliases = t.strings("aliases") if "aliases" in t.data else ()
    if not all(aliases):
        raise t.fail("aliases", "a list of non-empty model names")
    return tuple(dict.fromkeys(("auto", *aliases)))


def parse_routing(t: Table, base_dir: Path) -> RoutingSettings:
    """``RoutingSettings`` from the ``[routing]`` table; relative paths are from ``base_dir``."""
    settings = RoutingSettings(
        routes_file=_path(t, "routes_file", base_dir) or packaged_routes_file(),
        aliases=_aliases(t),
        ambiguity_policy=t.choice("ambiguity_policy", AMBIGUITY_POLICIES, "cheap_first"),
        default_tier=t.optional("default_tier", str),
        tier_order=_tier_order(t),
        escalation=t.get("escalation", bool, True),
        context_turns=t.count("context_turns", 2, minimum=0),
        max_prompt_tokens=t.count("max_prompt_tokens", 160, minimum=8),
        cache_dir=_path(t, "cache_dir", base_dir),
        signals=t.get("signals", bool, True),
        signals_file=_path(t, "signals_file", base_dir),
        signals_flush_ms=t.positive("signals_flush_ms", 250.0),
        signals_batch=t.count("signals_batch", 256),
        signals_queue=t.count("signals_queue", 10_000),
    )
    if settings.default_tier == "":
        raise t.fail("default_tier", "a tier name")
    t.reject_unknown()
    return settings


@dataclass(frozen=True, slots=True)
class TierPlan:
    """The served tiers, cheapest first, and the tier for prompts no route claims."""

    order: tuple[str, ...]
    default: str

    def rank(self, tier: str) -> int:
        """Strength of ``tier``: its place in the order; a tier outside it ranks strongest."""
        return self.order.index(tier) if tier in self.order else len(self.order)

    def next(self, tier: str) -> str | None:
        return next_tier(tier, self.order)


def next_tier(tier: str, tiers_in_order: tuple[str, ...]) -> str | None:
    """The tier to escalate to after ``tier``, or None when it is the last (or not ordered)."""
    if tier not in tiers_in_order:
        return None
    i = tiers_in_order.index(tier)
    return tiers_in_order[i + 1] if i + 1 < len(tiers_in_order) else None


def tier_plan(settings: RoutingSettings, tiers: Collection[str]) -> TierPlan:
    """Resolve the configured tiers against ``tiers`` (those the models define).

    A tier named in the configuration that no model serves is an error naming its key; the
    built-in defaults only keep the tiers that are served.
    """
    known = ", ".join(sorted(tiers)) or "none"
    if settings.tier_order is None:
        order = tuple(t for t in ("cheap", "reasoning") if t in tiers)
    else:
        for i, tier in enumerate(settings.tier_order):
            if tier not in tiers:
                raise ConfigError(
                    f"routing.tier_order[{i}]: no model serves tier {tier!r} (tiers: {known})"
                )
        order = settings.tier_order
    default = settings.default_tier
    if default is not None and default not in tiers:
        raise ConfigError(
            f"routing.default_tier: no model serves tier {default!r} (tiers: {known})"
        )
    if not tiers and default is None:
        raise ConfigError("routing.default_tier: no model serves any tier")
    fallback = order[0] if order else sorted(tiers)[0]
    return TierPlan(order, default or fallback)
