"""Tests for gateway/routing/router.py, classifier.py and policy.py, with the real model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.core.routing_settings import TierPlan
from gateway.routing.classifier import RouteClassifier, train_head
from gateway.routing.policy import Evidence, Reason, RouteScore, ThresholdPolicy
from gateway.routing.router import Router, decision_headers
from gateway.routing.routes import Calibration, RouteSet

pytest_plugins = ["tests.routing_fixtures"]

RouterFactory = Callable[..., Awaitable[Router]]
PLAN = TierPlan(("cheap", "reasoning"), "cheap")


async def test_prompts_go_to_the_route_they_resemble(
    make_router: RouterFactory, small_routes: RouteSet, onnx_embedder: OnnxEmbedder
) -> None:
    router = await make_router(small_routes)
    prompts = ["hello, good evening!", "write a rust function that parses json",
               "how do you say good luck in german"]
    vectors = onnx_embedder.embed(prompts)
    decisions = [router.route(v) for v in vectors]
    assert [d.ranked[0].route for d in decisions] == ["greeting", "code", "translate"]
    code = decisions[1]
    assert code.tier == "reasoning" and code.cache == "exact"
    assert code.score is not None and code.margin is not None and code.margin > 0


async def test_without_a_vector_routing_takes_the_default_tier(
    make_router: RouterFactory, small_routes: RouteSet
) -> None:
    router = await make_router(small_routes)
    decision = router.route(None)
    assert (decision.route, decision.tier, decision.reason) == (None, "cheap", Reason.NO_EMBEDDING)
    wrong_size = router.route(np.ones(8, dtype=np.float32))
    assert wrong_size.reason is Reason.NO_EMBEDDING and wrong_size.tier == "cheap"
    assert decision_headers(decision) == {
        "x-gateway-route": "none", "x-gateway-tier": "cheap",
        "x-gateway-route-reason": "no_embedding (embedder unavailable)",
    }


async def test_headers_explain_a_decision(
    make_router: RouterFactory, small_routes: RouteSet, onnx_embedder: OnnxEmbedder
) -> None:
    router = await make_router(small_routes)
    headers = decision_headers(router.route(onnx_embedder.embed(["fix this python bug"])[0]))
    assert headers["x-gateway-route"] == "code"
    assert headers["x-gateway-tier"] == "reasoning"
    assert headers["x-gateway-route-reason"].split(" ")[0] in ("confident", "ambiguous")
    assert float(headers["x-gateway-route-score"]) > 0
    assert float(headers["x-gateway-route-margin"]) > 0


async def test_the_head_is_cached_on_disk_and_reused(
    make_router: RouterFactory, small_routes: RouteSet, tmp_path: Path
) -> None:
    await make_router(small_routes)
    heads = list((tmp_path / "cache").glob("head-*.npz"))
    assert len(heads) == 1
    stamp = heads[0].stat().st_mtime_ns
    await make_router(small_routes)
    assert heads[0].stat().st_mtime_ns == stamp


def evidence(confidence: float, first: tuple[str, str, float],
             second: tuple[str, str, float]) -> Evidence:
    ranked = tuple(RouteScore(n, t, s, s, 0.5) for n, t, s in (first, second))
    return Evidence(ranked, confidence, first[2] - second[2])


@pytest.mark.parametrize(
    ("policy", "tier"), [("cheap_first", "cheap"), ("strongest", "reasoning"),
                         ("default_tier", "cheap")],
)
def test_an_ambiguous_prompt_follows_the_ambiguity_policy(
    small_routes: RouteSet, policy: str, tier: str
) -> None:
    routes = small_routes.with_calibration(Calibration(threshold=0.8, margin=0.05))
    decide = ThresholdPolicy(routes, PLAN, policy).decide
    decision = decide(evidence(0.5, ("code", "reasoning", 0.61), ("greeting", "cheap", 0.60)))
    assert decision.reason is Reason.AMBIGUOUS and decision.tier == tier
    assert decision.route == "code" and decision.cache == "exact"  # the stricter of the two
    assert "code 0.610 vs greeting 0.600" in decision.detail


def test_confidence_and_margin_both_decide_and_low_scores_are_out_of_scope(
    small_routes: RouteSet
) -> None:
    routes = small_routes.with_calibration(
        Calibration(threshold=0.8, margin=0.05, in_scope=0.3, route_thresholds={"code": 0.95}))
    decide = ThresholdPolicy(routes, PLAN).decide
    sure = decide(evidence(0.9, ("greeting", "cheap", 0.7), ("code", "reasoning", 0.5)))
    assert sure.reason is Reason.CONFIDENT and sure.route == "greeting"
    close = decide(evidence(0.9, ("greeting", "cheap", 0.7), ("code", "reasoning", 0.68)))
    assert close.reason is Reason.AMBIGUOUS
    own_threshold = decide(evidence(0.9, ("code", "reasoning", 0.7), ("greeting", "cheap", 0.5)))
    assert own_threshold.reason is Reason.AMBIGUOUS
    outside = decide(evidence(0.99, ("code", "reasoning", 0.2), ("greeting", "cheap", 0.1)))
    assert outside.reason is Reason.OUT_OF_SCOPE and outside.route is None
    assert outside.tier == "cheap"


def test_the_classifier_pads_routes_with_fewer_than_k_utterances() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([0, 0, 0, 0, 1])
    classifier = RouteClassifier(vectors, labels, train_head(vectors, labels, 2))
    scores = classifier.score(vectors[4], blend=0.0)
    lone = int(np.flatnonzero(scores.routes == 1)[0])
    assert scores.similarity[lone] == pytest.approx(1.0, abs=1e-5)
