"""Tests for gateway/routing/learned/linear.py: the per-tier ridge estimate with forgetting."""

from __future__ import annotations

import numpy as np

from gateway.routing.learned.linear import Linear, conjugate_gradient


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_fit_is_the_closed_form_ridge_regression_with_a_free_intercept() -> None:
    x = unit_rows(200, 16, 0)
    y = (x[:, 0] > 0).astype(np.float64)
    linear = Linear(16, ridge=0.5, half_life_s=100.0)
    for v, ok in zip(x, y, strict=True):
        linear.add(v, "cheap", float(ok), 1.0, 0.0)
    linear.refit()
    design = np.hstack([x, np.ones((200, 1))]).astype(np.float64)
    penalty = np.diag([0.5] * 16 + [1e-6])
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    for v in x[:5]:
        p, evidence = linear.estimate(v, "cheap", 0.0)
        assert abs(p - min(1.0, max(0.0, float(coef[:-1] @ v + coef[-1])))) < 1e-4
        assert evidence == 200.0
    assert linear.estimate(x[0], "reasoning", 0.0) == (0.5, 0.0)  # no outcome of that tier


def test_older_outcomes_weigh_less_and_the_evidence_decays() -> None:
    x = unit_rows(50, 8, 1)
    linear = Linear(8, ridge=1.0, half_life_s=10.0)
    for v in x:
        linear.add(v, "cheap", 0.0, 1.0, 0.0)
    for v in x:  # the same prompts ten half-lives later: the cheap tier got better
        linear.add(v, "cheap", 1.0, 1.0, 100.0)
    linear.refit()
    p, evidence = linear.estimate(x[0], "cheap", 100.0)
    assert p > 0.95 and 50.0 < evidence < 50.1
    assert linear.estimate(x[0], "cheap", 110.0)[1] < 25.1  # one half-life later


def test_conjugate_gradients_match_a_dense_solve_from_any_start() -> None:
    x = unit_rows(300, 32, 2).astype(np.float64)
    a = x.T @ x + 0.1 * np.eye(32)
    b = x.T @ np.random.default_rng(3).random(300)
    exact = np.linalg.solve(a, b)
    for start in (np.zeros(32), exact + 1.0):
        assert np.allclose(conjugate_gradient(a, b, start), exact, atol=1e-6)


def test_state_and_restore_carry_the_statistics() -> None:
    x = unit_rows(40, 8, 4)
    first = Linear(8, ridge=1.0, half_life_s=10.0)
    for i, v in enumerate(x):
        first.add(v, "cheap", float(i % 2), 1.0, 0.0)
    second = Linear(8, ridge=1.0, half_life_s=10.0)
    second.restore(first.state())
    for v in x[:5]:
        assert second.estimate(v, "cheap", 0.0) == first.estimate(v, "cheap", 0.0)
