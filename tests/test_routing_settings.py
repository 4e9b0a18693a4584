"""Tests for gateway/core/routing_settings.py: the [routing] table, tiers and their order."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.routing_settings import (
    RoutingSettings,
    next_tier,
    packaged_routes_file,
    parse_routing,
    tier_plan,
)
from gateway.core.toml_table import ConfigError, Table


def parse(data: dict[str, object], base: Path = Path("/base")) -> RoutingSettings:
    return parse_routing(Table(data, "routing"), base)


def test_defaults_use_the_packaged_routes_file_and_auto() -> None:
    s = parse({})
    assert s.routes_file == packaged_routes_file()
    assert s.routes_file.name == "routes.toml" and s.routes_file.exists()
    assert s.aliases == ("auto",)
    assert s.ambiguity_policy == "cheap_first"
    assert s.is_alias("auto") and not s.is_alias("gpt-4o-mini")


def test_relative_paths_are_resolved_from_the_config_folder() -> None:
    s = parse({"routes_file": "my_routes.toml", "cache_dir": "cache"})
    assert s.routes_file == Path("/base/my_routes.toml")
    assert s.cache_path(Path("/data")) == Path("/base/cache")
    assert parse({}).signals_path(Path("/data")) == Path("/data/signals.sqlite3")


def test_signals_are_kept_30_days_and_0_keeps_them_forever() -> None:
    assert parse({}).signals_retention_days == 30.0
    assert parse({"signals_retention_days": 0}).signals_retention_days == 0.0
    assert parse({"signals_retention_days": 0.5}).signals_retention_days == 0.5


def test_aliases_add_to_auto() -> None:
    assert parse({"aliases": ["router", "auto"]}).aliases == ("auto", "router")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"ambiguity_policy": "random"}, "routing.ambiguity_policy"),
        ({"tier_order": ["cheap", "cheap"]}, "routing.tier_order"),
        ({"tier_order": []}, "routing.tier_order"),
        ({"aliases": [""]}, "routing.aliases"),
        ({"routes_file": ""}, "routing.routes_file"),
        ({"signals_flush_ms": 0}, "routing.signals_flush_ms"),
        ({"signals_retention_days": -1}, "routing.signals_retention_days"),
        ({"signals_retention_days": "30d"}, "routing.signals_retention_days"),
        ({"context_turns": -1}, "routing.context_turns"),
        ({"colour": "blue"}, "routing.colour"),
    ],
)
def test_a_bad_value_names_its_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse(data)


def test_default_tier_order_keeps_only_served_tiers() -> None:
    plan = tier_plan(parse({}), {"cheap", "vision"})
    assert plan.order == ("cheap",)
    assert plan.default == "cheap"


def test_without_cheap_or_reasoning_the_default_is_a_served_tier() -> None:
    plan = tier_plan(parse({}), {"default"})
    assert plan.order == () and plan.default == "default"


def test_a_configured_tier_that_no_model_serves_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"routing\.tier_order\[1\]: no model serves tier 'gold'"):
        tier_plan(parse({"tier_order": ["cheap", "gold"]}), {"cheap", "reasoning"})
    with pytest.raises(ConfigError, match=r"routing\.default_tier"):
        tier_plan(parse({"default_tier": "gold"}), {"cheap", "reasoning"})


def test_next_tier_walks_the_order_and_stops_at_the_end() -> None:
    order = ("cheap", "reasoning", "frontier")
    assert next_tier("cheap", order) == "reasoning"
    assert next_tier("reasoning", order) == "frontier"
    assert next_tier("frontier", order) is None
    assert next_tier("vision", order) is None


def test_rank_puts_unordered_tiers_strongest() -> None:
    plan = tier_plan(parse({}), {"cheap", "reasoning", "vision"})
    assert plan.rank("cheap") < plan.rank("reasoning") < plan.rank("vision")


def test_outcome_weights_default_and_can_be_changed_one_by_one() -> None:
    s = parse({"outcomes": {"retry_window_s": 30, "weights": {"feedback": 5}}}).outcomes
    assert s.retry_window_s == 30.0 and s.retry_similarity == 0.95
    assert s.weight("feedback") == 5.0 and s.weight("escalation") == 1.0
    assert parse({}).outcomes.weight("answer") == 0.3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"retry_similarity": 0}, "routing.outcomes.retry_similarity"),
        ({"retry_similarity": 1.5}, "routing.outcomes.retry_similarity"),
        ({"retry_window_s": -1}, "routing.outcomes.retry_window_s"),
        ({"recent_answers": 0}, "routing.outcomes.recent_answers"),
        ({"feedback_per_minute": -1}, "routing.outcomes.feedback_per_minute"),
        ({"weights": {"feedback": -1}}, "routing.outcomes.weights.feedback"),
        ({"weights": {"clicks": 1}}, "routing.outcomes.weights.clicks: unknown key"),
        ({"colour": "blue"}, "routing.outcomes.colour: unknown key"),
    ],
)
def test_a_bad_outcomes_value_names_its_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse({"outcomes": data})


def test_learning_bias_correction_and_margin_are_read_and_checked() -> None:
    s = parse({"learning": {"bias_correction": False, "margin": 1.5, "bias_band": 0.05}}).learning
    assert s.bias_correction is False and s.margin == 1.5 and s.bias_band == 0.05
    with pytest.raises(ConfigError, match=r"routing\.learning\.margin"):
        parse({"learning": {"margin": -1}})
    with pytest.raises(ConfigError, match=r"routing\.learning\.bias_correction"):
        parse({"learning": {"bias_correction": "yes"}})
    with pytest.raises(ConfigError, match=r"routing\.learning\.bias_band"):
        parse({"learning": {"bias_band": -0.1}})


def test_learning_gain_criterion_and_escalated_weight_are_read_and_checked() -> None:
    s = parse({"learning": {"relative_to": "best", "escalated_weight": 0.25}}).learning
    assert (s.relative_to, s.escalated_weight) == ("best", 0.25)
    default = parse({}).learning
    assert (default.relative_to, default.escalated_weight) == ("gain", 0.0)
    for bad in (1.5, -0.1):
        with pytest.raises(ConfigError, match=r"routing\.learning\.escalated_weight"):
            parse({"learning": {"escalated_weight": bad}})
    with pytest.raises(ConfigError, match=r"routing\.learning\.relative_to"):
        parse({"learning": {"relative_to": "ratio"}})


def test_learning_anchor_is_read_as_a_similarity_and_off_by_default() -> None:
    assert parse({}).learning.anchor == 0.0
    assert parse({"learning": {"anchor": 0.6}}).learning.anchor == 0.6
    for bad in (1.5, -2.0, -0.5):  # below 0 it would be off, silently
        with pytest.raises(ConfigError, match=r"routing\.learning\.anchor"):
            parse({"learning": {"anchor": bad}})
