"""gateway/core/cache_settings.py: the [cache] table, errors that name their key, calibration
file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.core.cache_settings import DEFAULT_THRESHOLD, parse_cache
from gateway.core.toml_table import ConfigError, Table


def _parse(data: dict[str, Any], base: Path) -> Any:
    return parse_cache(Table(data, "cache"), base)


def test_defaults_live_in_the_base_directory(tmp_path: Path) -> None:
    settings = _parse({}, tmp_path)
    assert settings.database == tmp_path / "cache.sqlite3"
    assert settings.index_dir == tmp_path / "cache_index"
    assert (settings.threshold, settings.threshold_source) == (DEFAULT_THRESHOLD, "default")


@pytest.mark.parametrize(("data", "message"), [
    ({"threshold": 1.5}, "cache.threshold: expected a cosine"),
    ({"threshold": "high"}, "cache.threshold: expected a number"),
    ({"default_policy": "sometimes"}, "cache.default_policy: expected one of"),
    ({"max_entries": 0}, "cache.max_entries: expected an integer of 1 or more"),
    ({"ttl_s": -1}, "cache.ttl_s: expected a number of 0 or more"),
    ({"tenants": {"acme": {"policy": "maybe"}}}, "cache.tenants.acme.policy"),
    ({"tenants": {"acme": {"colour": "red"}}}, "cache.tenants.acme.colour: unknown key"),
    ({"treshold": 0.9}, "cache.treshold: unknown key"),
])
def test_bad_values_name_their_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _parse(data, tmp_path)


def test_calibration_file_sets_the_threshold_unless_the_config_does(tmp_path: Path) -> None:
    (tmp_path / "cache_calibration.json").write_text(json.dumps({"threshold": 0.961}))
    assert _parse({}, tmp_path).threshold == 0.961
    assert _parse({"threshold": 0.9}, tmp_path).threshold == 0.9
    (tmp_path / "cache_calibration.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"cache\.calibration_file"):
        _parse({}, tmp_path)


def test_tenant_policy_and_shared_namespace(tmp_path: Path) -> None:
    settings = _parse({"tenants": {"acme": {"policy": "exact", "namespace": "docs"}}}, tmp_path)
    assert settings.namespace_for("acme") == "shared:docs"
    assert settings.namespace_for("other") == "tenant:other"
    assert settings.policy_for("acme", "semantic") == "exact"
    assert settings.policy_for("other", "exact") == "exact"
    assert settings.policy_for("other", None) == "semantic"
    assert settings.policy_for("other", "off") == "off"
    assert _parse({"enabled": False}, tmp_path).policy_for("other") == "off"
