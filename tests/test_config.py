"""Settings from TOML and the environment (gateway/core/config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import ConfigError, ModelSettings, load, parse

BASE: dict[str, Any] = {
    "providers": [{"name": "p", "kind": "openai", "base_url": "http://x/v1",
                   "api_key_env": "P_KEY"}],
    "models": [{"name": "m", "provider": "p", "tier": "cheap", "input_price_per_mtok": 1}],
    "embedder": {"enabled": False},
}


def _parse(data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse(data, env={"P_KEY": "secret-1"} if env is None else env,
                 base_dir=Path("/srv"), source="<test>")


def test_embedded_default_falls_back_to_demo_without_keys() -> None:
    settings = load(None, env={})
    assert {p.kind for p in settings.providers} == {"demo"}
    assert {m.tier for m in settings.models} == {"cheap", "reasoning"}


def test_embedded_default_enables_each_provider_whose_key_is_set() -> None:
    settings = load(None, env={"GROQ_API_KEY": "gsk-secret-value", "GEMINI_API_KEY": "k"})
    assert [p.name for p in settings.providers] == ["groq", "gemini"]
    assert all(m.provider in ("groq", "gemini") for m in settings.models)
    groq = settings.provider("groq")
    assert groq.api_key == "gsk-secret-value"
    assert "gsk-secret" not in repr(groq), "keys never appear in reprs"


def test_the_settings_say_which_providers_serve_and_why_the_demo_is_on_or_off() -> None:
    fallback = load(None, env={}).provider_notes
    assert fallback[0] == "providers enabled: demo"
    assert "GROQ_API_KEY is not set" in fallback[1]
    assert "no provider key is set: fallback provider demo answers" in fallback[2]
    real = load(None, env={"GROQ_API_KEY": "gsk-secret-value"}).provider_notes
    assert real[0] == "providers enabled: groq"
    assert "fallback provider demo is off" in real[2]
    assert not any("gsk-secret" in note for note in real)


def test_secret_comes_from_environment_and_relative_paths_from_file() -> None:
    settings = _parse(BASE)
    assert settings.providers[0].api_key == "secret-1"
    assert settings.server.data_dir == Path("/srv/data")
    assert settings.models[0].input_price_per_mtok == 1.0


@pytest.mark.parametrize(("patch", "message"), [
    ({"server": {"port": "80"}}, "server.port: expected an integer"),
    ({"server": {"port": 70000}}, "server.port: expected a port number"),
    ({"server": {"colour": "red"}}, "server.colour: unknown key"),
    ({"upstream": {"connect_timeout_s": -1}}, "upstream.connect_timeout_s: expected a number"),
    ({"models": [{"name": "m", "provider": "q"}]}, "models[0].provider: no provider named 'q'"),
    ({"models": [{"name": "auto", "provider": "p"}]}, "models[0].name"),
    ({"models": [{"provider": "p"}]}, "models[0].name: required"),
    ({"providers": [{"name": "p", "kind": "grpc", "base_url": "x"}]}, "providers[0].kind"),
    ({"providers": [{"name": "p", "base_url": "x", "api_key": "sk-1"}]}, "providers[0].api_key"),
    ({"providers": [{"name": "p", "kind": "openai"}]}, "providers[0].base_url: required"),
    ({"embedder": {"pooling": "max"}}, "embedder.pooling"),
    ({"tenants": {"default_limits": {"requests_per_minute": 2**64}}},
     "tenants.default_limits.requests_per_minute: expected an integer that fits in 64 bits"),
    ({"upstream": {"connect_timeout_s": float("nan")}},
     "upstream.connect_timeout_s: expected a finite number"),
    ({"cache": {"threshold": float("inf")}}, "cache.threshold: expected a finite number"),
    ({"server": {"header_timeout_s": 0}}, "server.header_timeout_s: expected a number above 0"),
    ({"server": {"max_connections": 0}}, "server.max_connections: expected an integer of 1"),
    ({"failover": {"failure_rate": 1.5}}, "failover.failure_rate: expected a share of calls"),
    ({"failover": {"min_calls": 0}}, "failover.min_calls: expected an integer of 1 or more"),
    ({"models": [{"name": "m", "provider": "p", "cache_write_price_per_mtok": -1}]},
     "models[0].cache_write_price_per_mtok: expected a number of 0 or more"),
    ({"models": [{"name": "m", "provider": "p", "cache_write_1h_price_per_mtok": -2}]},
     "models[0].cache_write_1h_price_per_mtok: expected a number of 0 or more"),
    ({"models": [{"name": "m", "provider": "p", "cache_write_1h_price_per_mtok": float("nan")}]},
     "models[0].cache_write_1h_price_per_mtok: expected a finite number"),
    ({"models": [{"name": "m", "provider": "p", "cache_write_1h_price_per_mtok": float("inf")}]},
     "models[0].cache_write_1h_price_per_mtok: expected a finite number"),
    ({"models": [{"name": "m", "provider": "p", "cache_write_1h_price_per_mtok": "6"}]},
     "models[0].cache_write_1h_price_per_mtok: expected a number"),
])
def test_bad_values_fail_naming_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _parse({**BASE, **patch})


def test_missing_required_key_variable_names_it() -> None:
    with pytest.raises(ConfigError, match="environment variable P_KEY is not set"):
        _parse(BASE, env={})


def test_cache_write_and_cached_prices_default_to_the_input_price() -> None:
    [unset] = _parse(BASE).models
    assert unset.cache_write_price_per_mtok == unset.cached_input_price_per_mtok == 1.0
    priced = {**BASE["models"][0], "cache_write_price_per_mtok": 1.25}
    [model] = _parse({**BASE, "models": [priced]}).models
    assert model.cache_write_price_per_mtok == 1.25


def test_the_1_hour_cache_write_price_defaults_to_twice_the_input_price() -> None:
    [unset] = _parse(BASE).models
    assert unset.cache_write_1h_price_per_mtok == 2.0
    priced = {**BASE["models"][0], "cache_write_1h_price_per_mtok": 1.8}
    [model] = _parse({**BASE, "models": [priced]}).models
    assert (model.cache_write_1h_price_per_mtok, model.cache_write_price_per_mtok) == (1.8, 1.0)


def test_a_model_made_in_code_prices_cached_and_written_tokens_as_input_unless_told() -> None:
    unset = ModelSettings("m", "p", "u", "cheap", input_price_per_mtok=2.0)
    assert unset.cached_input_price_per_mtok == unset.cache_write_price_per_mtok == 2.0
    assert unset.cache_write_1h_price_per_mtok == 4.0  # as the configuration's default
    free = ModelSettings("m", "p", "u", "cheap", input_price_per_mtok=2.0,
                         cached_input_price_per_mtok=0.0, cache_write_price_per_mtok=2.5,
                         cache_write_1h_price_per_mtok=0.0)
    assert (free.cached_input_price_per_mtok, free.cache_write_price_per_mtok,
            free.cache_write_1h_price_per_mtok) == (0.0, 2.5, 0.0)


def test_the_defaults_price_anthropic_cache_writes_by_their_lifetime() -> None:
    """5-minute writes at a quarter above the input price, 1-hour ones at twice it."""
    claude = [m for m in load(None, env={"ANTHROPIC_API_KEY": "k"}).models
              if m.provider == "anthropic"]
    assert claude
    for m in claude:
        assert m.cache_write_price_per_mtok == pytest.approx(m.input_price_per_mtok * 1.25)
        assert m.cache_write_1h_price_per_mtok == pytest.approx(m.input_price_per_mtok * 2)


def test_deployments_sharing_a_name_form_a_failover_group() -> None:
    data = {**BASE, "models": [{"name": "m", "provider": "p", "upstream_model": "a"},
                               {"name": "m", "provider": "p", "upstream_model": "b"}]}
    settings = _parse(data)
    assert [m.deployment_id for m in settings.models] == ["p/a", "p/b"]


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def test_deploy_reference_config_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    settings = load(root / "deploy" / "gateway.toml", env={})
    assert settings.models
    # The reference states each guard's and breaker's default, so it must agree with the code.
    defaults = _parse(BASE)
    assert settings.server.header_timeout_s == defaults.server.header_timeout_s
    assert settings.server.body_timeout_s == defaults.server.body_timeout_s
    assert settings.server.idle_timeout_s == defaults.server.idle_timeout_s
    assert settings.server.max_connections == defaults.server.max_connections
    assert settings.failover == defaults.failover
