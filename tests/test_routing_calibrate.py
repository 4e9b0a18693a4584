"""Tests for gateway/routing/calibrate.py: fitting thresholds and measuring a router."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.core.toml_table import ConfigError
from gateway.routing.calibrate import (
    FitOptions,
    Scored,
    _per_route,
    fit_calibration,
    fit_logistic,
    rank,
    read_examples,
    route_indices,
)


def synthetic(n: int = 400, seed: int = 0) -> Scored:
    """Two routes plus out-of-scope prompts: confident rows are right, close calls are coin
    flips, out-of-scope rows score low."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    truth[: n // 10] = -1
    gap = rng.uniform(0.0, 0.4, n).astype(np.float32)
    flip = (gap < 0.1) & (rng.random(n) < 0.5)
    best = np.where(truth < 0, rng.integers(0, 2, n), np.where(flip, 1 - truth, truth))
    top = np.where(truth < 0, 0.2, 0.6).astype(np.float32) + rng.uniform(0, 0.1, n)
    routes = np.stack([best, 1 - best, np.full(n, 2)], axis=1)
    sims = np.stack([top, top - gap, np.full(n, 0.1)], axis=1).astype(np.float32)
    log_probs = np.stack([np.log(0.5 + gap), np.log(0.5 - gap + 1e-3), np.full(n, -5.0)],
                         axis=1).astype(np.float32)
    return Scored(truth, routes, sims, log_probs, n_routes=2)


def test_the_fit_reaches_the_target_precision_and_rejects_out_of_scope() -> None:
    scored = synthetic()
    c = fit_calibration(scored, ["a", "b"], FitOptions(target_precision=0.95), model="m",
                        source="s.jsonl")
    r = rank(scored, c.blend)
    assert c.weights is not None
    features = np.stack([r.score, r.margin, r.log_prob], axis=1)
    conf = 1 / (1 + np.exp(-(features @ np.asarray(c.weights) + c.bias)))
    accepted = (r.score >= c.in_scope) & (conf >= c.threshold) & (r.margin >= c.margin)
    assert accepted.mean() > 0.5
    assert (r.top[accepted] == scored.truth[accepted]).mean() >= 0.95
    inside = scored.truth >= 0
    assert (r.score[~inside] < c.in_scope).all()
    assert (r.score[inside] >= c.in_scope).mean() == pytest.approx(0.95, abs=0.01)
    assert c.fitted_on == "s.jsonl (400 examples)" and c.target_precision == 0.95


def test_the_out_of_scope_class_is_never_a_candidate() -> None:
    scored = synthetic()
    scored.sims[:, 2] = 5.0  # the out-of-scope examples' class, however close, is not a route
    assert (rank(scored, 0.0).top < 2).all()


def test_logistic_regression_learns_a_separable_direction() -> None:
    x = np.linspace(-1, 1, 200)[:, None].astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float64)
    w, b = fit_logistic(x, y)
    assert w[0] > 5 and abs(b) < 1


def test_examples_are_read_from_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": " hi ", "route": "a"}) + "\n\n"
                    + json.dumps({"text": "weather?", "route": None}) + "\n")
    examples = read_examples(path)
    assert [(e.text, e.route) for e in examples] == [("hi", "a"), ("weather?", None)]
    assert route_indices(examples, ["b", "a"], "d").tolist() == [1, -1]
    with pytest.raises(ConfigError, match="d: routes not in the routes file: a"):
        route_indices(examples, ["b"], "d")


def test_an_example_holding_a_unicode_line_separator_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "tax\x85 refund\u2029?", "route": "a"},
                               ensure_ascii=False) + "\n", "utf-8")
    assert [(e.text, e.route) for e in read_examples(path)] == [("tax\x85 refund\u2029?", "a")]


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", r"d\.jsonl:2: not valid JSON"),
     ('{"route": "a"}', r"d\.jsonl:2: expected a non-empty string \"text\""),
     ('{"text": "x", "route": 3}', r"d\.jsonl:2: expected \"route\"")],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "route": null}\n' + line + "\n")
    with pytest.raises(ConfigError, match=message):
        read_examples(path)


def test_out_of_scope_prompts_count_against_no_routes_precision() -> None:
    top = np.array([0, 0, 1, 0, 1])
    truth = np.array([0, -1, 1, -1, 0])  # two out-of-scope prompts went to route 0
    a, b = _per_route(top, truth, ("a", "b"))
    assert (a.precision, a.recall, a.support) == (1.0, 0.5, 2)
    assert (b.precision, b.recall, b.support) == (0.5, 1.0, 1)
