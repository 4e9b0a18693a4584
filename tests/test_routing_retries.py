"""Quick client retries (gateway/routing/retries.py), on vectors from the real embedding model."""

from __future__ import annotations

from embedder_worker.model import OnnxEmbedder
from gateway.routing.retries import RecentAnswers
from gateway.routing.signals import Answered

pytest_plugins = ["tests.routing_fixtures"]

TAX = "How much VAT do I pay on a used car bought in Germany?"
TAX_AGAIN = "How much VAT do I pay on a used car I bought in Germany??"
OTHER = "Write a haiku about the sea."


def _answer(embedder: OnnxEmbedder, text: str, request_id: str, at_s: float,
            tenant: str = "acme") -> Answered:
    return Answered(request_id, tenant, "cheap", vector=embedder.embed([text])[0], at_s=at_s)


def test_a_near_identical_prompt_soon_after_an_answer_retries_it(
    onnx_embedder: OnnxEmbedder,
) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    first = _answer(onnx_embedder, TAX, "r1", 100.0)
    recent.add(first)
    retry = recent.retry_of("acme", onnx_embedder.embed([TAX_AGAIN])[0], 130.0)
    assert retry is not None and retry.earlier is first
    assert 0.95 <= retry.similarity <= 1.0


def test_a_different_prompt_is_not_a_retry(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    recent.add(_answer(onnx_embedder, TAX, "r1", 100.0))
    assert recent.retry_of("acme", onnx_embedder.embed([OTHER])[0], 101.0) is None


def test_a_repeat_after_the_window_is_not_a_retry(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    recent.add(_answer(onnx_embedder, TAX, "r1", 100.0))
    assert recent.retry_of("acme", onnx_embedder.embed([TAX])[0], 160.5) is None


def test_another_tenants_repeat_is_not_a_retry(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    recent.add(_answer(onnx_embedder, TAX, "r1", 100.0, tenant="acme"))
    assert recent.retry_of("globex", onnx_embedder.embed([TAX])[0], 101.0) is None


def test_an_answer_is_retried_at_most_once(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    recent.add(_answer(onnx_embedder, TAX, "r1", 100.0))
    vector = onnx_embedder.embed([TAX])[0]
    assert recent.retry_of("acme", vector, 101.0) is not None
    assert recent.retry_of("acme", vector, 102.0) is None


def test_the_latest_similar_answer_is_the_one_retried(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=60, similarity=0.95)
    recent.add(_answer(onnx_embedder, OTHER, "r1", 100.0))
    recent.add(_answer(onnx_embedder, TAX, "r2", 101.0))
    retry = recent.retry_of("acme", onnx_embedder.embed([TAX_AGAIN])[0], 102.0)
    assert retry is not None and retry.earlier.request_id == "r2"


def test_memory_is_bounded_and_the_oldest_answers_go_first(onnx_embedder: OnnxEmbedder) -> None:
    recent = RecentAnswers(window_s=600, similarity=0.95, max_answers=2)
    for i, text in enumerate((TAX, OTHER, "Translate good night into Spanish")):
        recent.add(_answer(onnx_embedder, text, f"r{i}", 100.0 + i))
    assert len(recent) == 2
    assert recent.find("acme", "r0") is None and recent.find("acme", "r2") is not None
    assert recent.retry_of("acme", onnx_embedder.embed([TAX])[0], 103.0) is None


def test_an_answer_without_a_vector_is_found_by_id_but_never_retried() -> None:
    recent = RecentAnswers()
    recent.add(Answered("r1", "acme", "cheap", at_s=1.0))
    assert recent.find("acme", "r1") is not None and recent.find("globex", "r1") is None
