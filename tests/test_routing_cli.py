"""Tests for gateway/routing/cli.py: routes check, build, fit and eval end to end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.routing.cli import main
from gateway.routing.routes import load_routes

pytest_plugins = ["tests.routing_fixtures"]

EXAMPLES = {
    "greeting": ["hi", "hello there", "good morning", "hey how are you", "thanks a lot",
                 "bye for now", "nice to meet you", "good evening friend", "what's up",
                 "see you later"],
    "code": ["write a python function to sort a list", "fix this javascript TypeError",
             "write a sql query for the top customers", "implement a stack in java",
             "why does my rust code not compile", "write unit tests for this class",
             "refactor this function", "explain this regex", "debug this segfault in C",
             "write a bash script to back up files"],
    "translate": ["translate hello into spanish", "how do you say thanks in french",
                  "what does danke mean", "translate this into german", "say goodbye in italian",
                  "translate good night to japanese", "what is bread in portuguese",
                  "put this sentence into dutch", "how do I say cheers in korean",
                  "translate the menu into english"],
}
OUT_OF_SCOPE = ["what is the meaning of life", "is it going to rain tomorrow",
                "how tall is the eiffel tower", "recommend a good novel"]


def write_examples(path: Path, rows: Sequence[tuple[str, str | None]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "route": r}) + "\n" for t, r in rows))
    return path


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    train = [(t, r) for r, texts in EXAMPLES.items() for t in texts[:6]] + [
        (t, None) for t in OUT_OF_SCOPE[:2]]
    held = [(t, r) for r, texts in EXAMPLES.items() for t in texts[6:]] + [
        (t, None) for t in OUT_OF_SCOPE[2:]]
    return write_examples(tmp_path / "train.jsonl", train), write_examples(
        tmp_path / "held.jsonl", held)


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def test_build_check_fit_eval(data: tuple[Path, Path], tmp_path: Path, routing_model_dir: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    train, held = data
    routes = tmp_path / "routes.toml"
    common = ("--cache", tmp_path / "cache", "--model-dir", routing_model_dir)
    assert run("routes", "build", "--data", train, "--out", routes, "--per-route", "5",
               "--tier", "code=reasoning", "--default-tier", "cheap") == 0
    built = load_routes(routes)
    assert [len(r.utterances) for r in built.routes] == [5, 5, 5]
    assert built.route("code").tier == "reasoning" and len(built.out_of_scope) == 2
    assert run("routes", "check", "--routes", routes) == 0
    assert "3 routes, 15 utterances" in capsys.readouterr().out
    assert run("routes", "fit", "--routes", routes, "--data", held, "--target-precision",
               "0.9", *common) == 0
    assert load_routes(routes).calibration.fitted_on == "held.jsonl (14 examples)"
    assert "[calibration] written" in capsys.readouterr().out
    assert run("routes", "eval", "--routes", routes, "--data", held, "--json", *common) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 14 and report["out_of_scope"] == 2
    assert report["accuracy"] >= 0.75
    assert {s["route"] for s in report["per_route"]} == {"greeting", "code", "translate"}


def test_errors_name_the_place_and_exit_2(tmp_path: Path, data: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routes]]\nname = "x"\ntier = "gold"\nutterances = ["a"]\n')
    assert run("routes", "check", "--routes", bad) == 2
    assert "bad.toml: routes[0].tier: no model serves tier 'gold'" in capsys.readouterr().err
    train, _ = data
    assert run("routes", "build", "--data", train, "--out", tmp_path / "r.toml") == 2
    assert "has no tier" in capsys.readouterr().err
    (tmp_path / "exists.toml").write_text("")
    assert run("routes", "build", "--data", train, "--out", tmp_path / "exists.toml",
               "--default-tier", "cheap") == 2


def test_any_label_of_a_data_set_makes_a_usable_route(
    tmp_path: Path, routing_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {"greeting": "greeting?", "code": "code (all kinds)", "translate": "card/translate"}
    rows = [(t, labels[r]) for r, texts in EXAMPLES.items() for t in texts] + [
        (t, None) for t in OUT_OF_SCOPE]
    data = write_examples(tmp_path / "labelled.jsonl", rows)
    routes = tmp_path / "routes.toml"
    assert run("routes", "build", "--data", data, "--out", routes, "--default-tier", "cheap") == 0
    assert set(load_routes(routes).names) == set(labels.values())
    common = ("--cache", tmp_path / "cache", "--model-dir", routing_model_dir)
    assert run("routes", "check", "--routes", routes) == 0
    assert run("routes", "eval", "--routes", routes, "--data", data, *common) == 0
    out = capsys.readouterr().out
    # One tier for every route: a tier accuracy would be 100% whatever the router did.
    assert "tier accuracy (decided tier = the true route's tier): n/a" in out
    assert "greeting?" in out


def test_a_label_that_cannot_name_a_route_is_refused_at_build_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_examples(tmp_path / "labelled.jsonl", [("hello", "caf\u00e9"), ("hi", "ok")])
    routes = tmp_path / "routes.toml"
    assert run("routes", "build", "--data", data, "--out", routes, "--default-tier", "cheap") == 2
    assert "route 'café' cannot be a route name: expected 1 to 100 printable ASCII" in (
        capsys.readouterr().err)
    assert not routes.exists()
