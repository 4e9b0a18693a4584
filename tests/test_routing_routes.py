"""Tests for gateway/routing/routes.py: the routes file, its validation and its rewriting."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.core.routing_settings import RoutingSettings, packaged_routes_file, tier_plan
from gateway.core.toml_table import ConfigError
from gateway.routing.routes import (
    Calibration,
    load_configured_routes,
    load_routes,
    parse_routes,
    render_routes,
    write_calibration,
)

ONE_ROUTE = """
# a comment that must survive
[[routes]]
name = "code"
tier = "reasoning"
utterances = ["write a function", "fix this bug"]
"""


def test_the_packaged_routes_are_valid_and_well_stocked() -> None:
    routes = load_routes(packaged_routes_file(), tiers={"cheap", "reasoning"})
    names = set(routes.names)
    assert {"factual", "chit_chat", "summarize", "translate", "extract_format"} <= names
    assert {"code", "math", "reasoning", "analysis_planning", "long_writing"} <= names
    for route in routes.routes:
        assert len(route.utterances) >= 25, route.name
        assert route.tier in ("cheap", "reasoning")
    assert routes.route("code").cache == "exact" and routes.route("math").cache == "exact"
    assert routes.calibration.fitted


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text("[[routes]\nname =")
    with pytest.raises(ConfigError, match=r"routes\.toml: not valid TOML"):
        load_routes(path)


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"at least one \[\[routes\]\]"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = []',
         r"routes\[0\]\.utterances: a route needs at least one"),
        ('[[routes]]\nname = "a"\ntier = "gold"\nutterances = ["x"]',
         r"routes\[0\]\.tier: no model serves tier 'gold'"),
        ('[[routes]]\nname = "a"\nutterances = ["x"]', r"routes\[0\]\.tier: required"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["x"]\ncache = "maybe"',
         r"routes\[0\]\.cache"),
        ('[[routes]]\nname = " a"\ntier = "cheap"\nutterances = ["x"]', r"routes\[0\]\.name"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["  "]',
         r"routes\[0\]\.utterances\[0\]"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["x"]\n'
         '[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["y"]', r"routes\[1\]\.name"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["x"]\ncolour = 1',
         r"routes\[0\]\.colour: unknown key"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["x"]\n[calibration]\n'
         "threshold = 2", r"calibration\.threshold"),
        ('[[routes]]\nname = "a"\ntier = "cheap"\nutterances = ["x"]\n'
         "[calibration.route_thresholds]\nb = 0.5", r"calibration\.route_thresholds\.b"),
    ],
)
def test_a_bad_routes_file_fails_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"routes\.toml: .*" + message):
        parse_routes(tomllib.loads(text), tiers={"cheap", "reasoning"}, source="routes.toml")


def test_render_routes_reads_back_the_same_routes() -> None:
    text = ('[[routes]]\nname = "q"\ntier = "cheap"\ncache = "off"\ndescription = "Q"\n'
            'utterances = ["say \\"hi\\"", "ünïcode ✓", "back\\\\slash"]\n'
            '[out_of_scope]\nutterances = ["nothing"]\n')
    routes = parse_routes(tomllib.loads(text))
    again = parse_routes(tomllib.loads(render_routes(routes, "a header\nline two")))
    assert again.routes == routes.routes
    assert again.out_of_scope == ("nothing",)


def test_write_calibration_replaces_only_the_calibration(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ONE_ROUTE + "\n[calibration]\nthreshold = 0.1\n")
    first = Calibration(threshold=0.7, margin=0.05, in_scope=0.2, blend=0.3,
                        weights=(1.0, 2.0, 3.0), bias=-1.0, route_thresholds={"code": 0.8},
                        target_precision=0.9, model="m", fitted_on="data.jsonl (10 examples)")
    written = write_calibration(path, first)
    assert written.calibration == first
    write_calibration(path, Calibration(threshold=0.6, fitted_on="again"))
    text = path.read_text()
    assert "# a comment that must survive" in text
    assert text.count("[calibration]") == 1 and "route_thresholds" not in text
    assert load_routes(path).calibration.threshold == 0.6


def test_the_default_routes_adapt_to_the_served_tiers(tmp_path: Path) -> None:
    settings = RoutingSettings(routes_file=packaged_routes_file())
    only_cheap = load_configured_routes(settings, {"cheap"}, tier_plan(settings, {"cheap"}))
    assert {r.tier for r in only_cheap.routes} == {"cheap"}
    both = load_configured_routes(settings, {"cheap", "reasoning"},
                                  tier_plan(settings, {"cheap", "reasoning"}))
    assert both.route("code").tier == "reasoning"
    mine = tmp_path / "mine.toml"
    mine.write_text(ONE_ROUTE)
    with pytest.raises(ConfigError, match=r"mine\.toml: routes\[0\]\.tier"):
        load_configured_routes(RoutingSettings(routes_file=mine), {"cheap"},
                               tier_plan(settings, {"cheap"}))
