"""The ``[routing]`` table of the main configuration, read once into ``RoutingSettings``.

``parse_routing(t, base_dir)`` reads the table (``t`` is the config module's ``Table`` for
``routing``, so every error names its key) and rejects unknown keys. Which tiers exist is known
only once the models are read: ``tier_plan`` resolves the tier names against them. Reads no
file: the routes file itself is loaded by ``gateway.routing.routes``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gateway.core.toml_table import ConfigError, Table

AMBIGUITY_POLICIES = ("cheap_first", "strongest", "default_tier")
LEARNING_SCOPES = ("global", "tenant")
LEARNING_REFERENCES = ("best", "prior", "gain")
PACKAGED_ROUTES = "routes.toml"


def packaged_routes_file() -> Path:
    """The team's default routes file, shipped as package data (``gateway/routing/routes.toml``)."""
    return Path(str(resources.files("gateway.routing").joinpath(PACKAGED_ROUTES)))


OUTCOME_SOURCES = ("answer", "escalation", "provider_failure", "client_retry", "feedback")


@dataclass(frozen=True, slots=True)
class OutcomeSettings:
    """How what happened to requests becomes learner outcomes (``[routing.outcomes]``).

    A request answered with no complaint counts as an acceptable answer from its tier with the
    ``answer`` weight; an answer escalation discarded (or a tier whose every deployment failed:
    ``provider_failure``) counts against its tier; a near-identical prompt from the same tenant
    within ``retry_window_s`` of an answer (cosine similarity at or over ``retry_similarity``)
    counts against that answer (``client_retry``); feedback counts with its score. A weight of
    0 turns a source off; ``retry_window_s = 0`` turns retry detection off. ``recent_answers``
    bounds the answers kept in memory for retries and feedback (older ones are read back from
    the signal store). ``feedback_per_minute`` caps ``POST /v1/feedback`` per API key (a token
    bucket in the tenants' own counters, shared by replicas with Redis); 0 lifts the cap.
    """

    retry_window_s: float = 120.0
    retry_similarity: float = 0.95
    recent_answers: int = 4096
    weights: tuple[tuple[str, float], ...] = (
        ("answer", 0.3), ("escalation", 1.0), ("provider_failure", 0.1),
        ("client_retry", 1.0), ("feedback", 2.0),
    )
    feedback_per_minute: int = 60

    def weight(self, source: str) -> float:
        return dict(self.weights)[source]


def parse_outcomes(t: Table) -> OutcomeSettings:
    """``OutcomeSettings`` from ``[routing.outcomes]`` (and its ``weights`` table)."""
    similarity = t.get("retry_similarity", float, 0.95)
    if not 0 < similarity <= 1:
        raise t.fail("retry_similarity", "a cosine similarity above 0 and at most 1")
    w = t.table("weights")
    defaults = dict(OutcomeSettings().weights)
    weights = tuple((name, w.non_negative(name, defaults[name])) for name in OUTCOME_SOURCES)
    w.reject_unknown()
    settings = OutcomeSettings(
        retry_window_s=t.non_negative("retry_window_s", 120.0),
        retry_similarity=similarity,
        recent_answers=t.count("recent_answers", 4096),
        weights=weights,
        feedback_per_minute=t.count("feedback_per_minute", 60, minimum=0),
    )
    t.reject_unknown()
    return settings


@dataclass(frozen=True, slots=True)
class LearningSettings:
    """The ``[routing.learning]`` table: the learned policy and its learner.

    ``quality_target`` is relative: with ``calibration_window`` 0 a cheaper tier qualifies when
    its estimate reaches ``quality_target`` times the reference (``relative_to``); with a
    window, the threshold is
    set after each decision so that over the last ``calibration_window`` decisions the estimated
    quality given up is what the target allows (0.95: keep 95% of the best tier's).
    ``explore_share`` of eligible requests go to another tier than the estimate picks. Outcomes
    lose half their weight every ``half_life_s``; at most ``max_outcomes`` are remembered per
    scope (``global``: one memory; ``tenant``: one per tenant), the oldest forgotten first.
    ``k`` neighbours inform an estimate, those with a cosine similarity below ``floor`` not at
    all (unrelated prompts: with none above it the intent decision stands), the others weighted
    by ``exp(sharpness * (similarity - nearest's similarity))``, or, where even the nearest is
    below ``anchor`` (0: off, the default), ``exp(sharpness * (similarity - anchor))``, so a
    prompt unlike any seen rests more on the prior and the linear fit; ``prior_weight`` is how many
    outcomes' worth the intent route's decision counts for, ``linear_weight`` the same (at most)
    for each tier's ridge regression over the whole embedding (L2 penalty ``ridge``). ``dim`` is
    the size vectors are projected to before they are remembered (a fixed seeded random
    projection: it bounds memory). ``file`` defaults to ``<data_dir>/learning.sqlite3``.
    ``bias_correction`` shifts each cheaper tier's estimate by how far the outcomes that came
    back ran from the estimates the tier was chosen with; with ``bias_band`` above 0 only the
    decisions whose criterion (``policy.flip_target``) lay within ``bias_band`` of the
    threshold are measured (the marginal ones, which a correction moves); ``margin`` asks a
    cheaper tier to qualify with its estimate lowered by ``margin`` standard errors
    (``sqrt(p(1-p)/(prior_weight + evidence))``), so a tier judged on few outcomes near the
    prompt has to be clearly good to be chosen.
    ``relative_to`` is what ``quality_target`` multiplies: ``best``, the best tier's estimate for
    the prompt, or ``prior``, the prior acceptability of the intent decision's tier (a fixed
    0.9); with ``gain`` a cheaper tier qualifies when it falls short of the best estimate by at
    most ``(1 - quality_target)`` of that 0.9 (the expected answers given up, not a ratio).
    ``escalated_weight`` is the share of its weight an outcome observed after an escalation
    keeps in its tier's estimate: it was asked only because the cheaper tier failed, so it
    speaks of the prompts that tier fails and would pull the estimate down (0: left out).
    """

    enabled: bool = False
    quality_target: float = 0.89
    calibration_window: int = 0
    explore_share: float = 0.02
    half_life_s: float = 7 * 86400.0
    max_outcomes: int = 100_000
    scope: str = "global"
    k: int = 64
    sharpness: float = 10.0
    prior_weight: float = 2.0
    floor: float = 0.3
    anchor: float = 0.0
    linear_weight: float = 8.0
    ridge: float = 10.0
    dim: int = 192
    seed: int = 0
    file: Path | None = None
    queue: int = 10_000
    bias_correction: bool = False
    bias_band: float = 0.0
    margin: float = 0.0
    relative_to: str = "gain"
    escalated_weight: float = 0.0

    def path(self, data_dir: Path) -> Path:
        return self.file or data_dir / "learning.sqlite3"


def parse_learning(t: Table, base_dir: Path) -> LearningSettings:
    """``LearningSettings`` from ``[routing.learning]``; unknown keys are an error."""
    settings = LearningSettings(
        enabled=t.get("enabled", bool, False),
        quality_target=t.positive("quality_target", 0.89),
        calibration_window=t.count("calibration_window", 0, minimum=0),
        explore_share=t.non_negative("explore_share", 0.02),
        half_life_s=t.positive("half_life_s", 7 * 86400.0),
        max_outcomes=t.count("max_outcomes", 100_000, minimum=16),
        scope=t.choice("scope", LEARNING_SCOPES, "global"),
        k=t.count("k", 64),
        sharpness=t.non_negative("sharpness", 10.0),
        prior_weight=t.positive("prior_weight", 2.0),
        floor=t.get("floor", float, 0.3),
        anchor=t.get("anchor", float, 0.0),
        linear_weight=t.non_negative("linear_weight", 8.0),
        ridge=t.positive("ridge", 10.0),
        dim=t.count("dim", 192, minimum=8),
        seed=t.get("seed", int, 0),
        file=_path(t, "file", base_dir),
        queue=t.count("queue", 10_000),
        bias_correction=t.get("bias_correction", bool, False),
        bias_band=t.non_negative("bias_band", 0.0),
        margin=t.non_negative("margin", 0.0),
        relative_to=t.choice("relative_to", LEARNING_REFERENCES, "gain"),
        escalated_weight=t.non_negative("escalated_weight", 0.0),
    )
    if settings.quality_target > 1.0:
        raise t.fail("quality_target", "a number above 0 and at most 1")
    if not -1.0 <= settings.floor <= 1.0:
        raise t.fail("floor", "a cosine similarity from -1 to 1")
    if not 0.0 <= settings.anchor <= 1.0:
        raise t.fail("anchor", "a cosine similarity from 0 (off) to 1")
    if settings.escalated_weight > 1.0:
        raise t.fail("escalated_weight", "a share of 0 or more and at most 1")
    if settings.explore_share >= 1.0:
        raise t.fail("explore_share", "a number of 0 or more and below 1")
    t.reject_unknown()
    return settings


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """How ``model: "auto"`` is routed, escalated and recorded.

    ``None`` paths default under the server's ``data_dir``: the utterance vector cache in
    ``<data_dir>/routing/`` and the signal store in ``<data_dir>/signals.sqlite3``. Signals
    older than ``signals_retention_days`` are deleted (0 keeps them forever). ``None``
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
    signals_retention_days: float = 30.0
    learning: LearningSettings = LearningSettings()
    outcomes: OutcomeSettings = field(default_factory=OutcomeSettings)

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
        signals_retention_days=t.non_negative("signals_retention_days", 30.0),
        learning=parse_learning(t.table("learning"), base_dir),
        outcomes=parse_outcomes(t.table("outcomes")),
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
