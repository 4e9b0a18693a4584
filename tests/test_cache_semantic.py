"""gateway/cache/semantic_cache.py: exact and semantic lookup, isolation, what is stored, TTL,
eviction, invalidation and concurrency, on the real model, real hnswlib graphs and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.cache.semantic_cache import SemanticCache
from tests.cache_fixtures import (
    CONTEXT,
    FakeClock,
    answer,
    load_embedder,
    open_cache,
    unit_vectors,
)


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return load_embedder()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[SemanticCache]:
    opened = await open_cache(tmp_path, threshold=0.9)
    yield opened
    await opened.close()


async def test_exact_hit_after_the_entry_is_flushed(cache: SemanticCache) -> None:
    assert await cache.store("tenant:a", CONTEXT, "What is 2+2?", None, answer("4"))
    assert await cache.lookup("tenant:a", CONTEXT, "What is 2+2?", None, "exact") is None
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, "What is 2+2?", None, "exact")
    assert hit is not None
    assert (hit.kind, hit.score) == ("exact", 1.0)
    assert hit.body["choices"][0]["message"]["content"] == "4"


async def test_semantic_hit_for_a_paraphrase(cache: SemanticCache,
                                             embedder: OnnxEmbedder) -> None:
    stored, asked = "How do I reset my password?", "How can I reset my password?"
    vectors = embedder.embed([stored, asked])
    await cache.store("tenant:a", CONTEXT, stored, vectors[0], answer("Click 'forgot'."))
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, asked, vectors[1], "semantic")
    assert hit is not None and hit.kind == "semantic"
    assert 0.9 <= hit.score <= 1.0
    assert hit.text == stored


async def test_negated_question_is_refused_by_the_guards(cache: SemanticCache,
                                                          embedder: OnnxEmbedder) -> None:
    stored, asked = "How do I reset my password?", "How do I not reset my password?"
    vectors = embedder.embed([stored, asked])
    await cache.store("tenant:a", CONTEXT, stored, vectors[0], answer())
    await cache.flush()
    assert await cache.lookup("tenant:a", CONTEXT, asked, vectors[1], "semantic") is None


async def test_case_and_punctuation_hit_the_exact_tier_on_semantic_routes(
    cache: SemanticCache, embedder: OnnxEmbedder
) -> None:
    stored, asked = "What is the capital of Australia?", "what is the capital of australia"
    vectors = embedder.embed([stored, asked])
    await cache.store("tenant:a", CONTEXT, stored, vectors[0], answer("Canberra"))
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, asked, vectors[1], "semantic")
    assert hit is not None and hit.kind == "exact"
    assert await cache.lookup("tenant:a", CONTEXT, asked, vectors[1], "exact") is None


TYPO, CORRECTED = "how many calroies are in an avocado", "How many calories are in an avocado?"


async def _store_typo(cache: SemanticCache, embedder: OnnxEmbedder) -> None:
    """``TYPO`` stored as the pipeline stores it: its text as sent, its folded text's vector."""
    await cache.store("tenant:a", CONTEXT, TYPO, embedder.embed([cache.key_text(TYPO)])[0],
                      answer("About 240."))
    await cache.flush()


async def test_a_stored_typo_meets_its_corrected_question_as_a_semantic_hit(
    cache: SemanticCache, embedder: OnnxEmbedder
) -> None:
    await _store_typo(cache, embedder)
    stored, asked = TYPO, CORRECTED  # the asked text's vector is not even needed
    hit = await cache.lookup("tenant:a", CONTEXT, asked, None, "semantic")
    assert hit is not None and (hit.kind, hit.text) == ("semantic", stored)
    assert await cache.lookup("tenant:a", CONTEXT, asked, None, "exact") is None
    assert await cache.invalidate(hit.entry_id)
    assert await cache.lookup("tenant:a", CONTEXT, asked, None, "semantic") is None


async def test_entries_are_isolated_by_namespace_and_context(
    cache: SemanticCache, embedder: OnnxEmbedder
) -> None:
    text = "Tell me a joke about cats."
    vector = embedder.embed([text])[0]
    await cache.store("tenant:a", CONTEXT, text, vector, answer())
    await cache.flush()
    assert await cache.lookup("tenant:b", CONTEXT, text, vector, "semantic") is None
    assert await cache.lookup("tenant:a", "other-context", text, vector, "semantic") is None
    assert await cache.lookup("tenant:a", CONTEXT, text, vector, "semantic") is not None


async def test_policy_exact_and_off_limit_the_lookup(cache: SemanticCache,
                                                     embedder: OnnxEmbedder) -> None:
    stored, asked = "How do I reset my password?", "How can I reset my password?"
    vectors = embedder.embed([stored, asked])
    await cache.store("tenant:a", CONTEXT, stored, vectors[0], answer())
    await cache.flush()
    assert await cache.lookup("tenant:a", CONTEXT, asked, vectors[1], "exact") is None
    assert await cache.lookup("tenant:a", CONTEXT, stored, vectors[0], "off") is None
    assert await cache.lookup("tenant:a", CONTEXT, stored, None, "exact") is not None


async def test_without_a_vector_only_the_exact_tier_answers(cache: SemanticCache,
                                                            embedder: OnnxEmbedder) -> None:
    stored, asked = "How do I reset my password?", "How can I reset my password?"
    await cache.store("tenant:a", CONTEXT, stored, embedder.embed([stored])[0], answer())
    await cache.flush()
    assert await cache.lookup("tenant:a", CONTEXT, asked, None, "semantic") is None
    assert await cache.lookup("tenant:a", CONTEXT, stored, None, "semantic") is not None


@pytest.mark.parametrize("body", [
    answer(finish_reason="length"),
    answer(finish_reason="content_filter"),
    answer(content=""),
    {"error": {"message": "boom"}},
    {"object": "chat.completion", "choices": []},
])
async def test_incomplete_or_failed_answers_are_not_stored(cache: SemanticCache,
                                                           body: dict[str, object]) -> None:
    assert not await cache.store("tenant:a", CONTEXT, "question", None, body)
    assert await cache.flush() == 0


async def test_tool_call_answers_are_stored(cache: SemanticCache) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
    body = answer(content="", finish_reason="tool_calls", tool_calls=[call])
    assert await cache.store("tenant:a", CONTEXT, "Weather in Oslo?", None, body)
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, "Weather in Oslo?", None, "exact")
    assert hit is not None and hit.body["choices"][0]["message"]["tool_calls"] == [call]


async def test_policy_off_and_duplicates_are_not_stored(cache: SemanticCache) -> None:
    assert not await cache.store("tenant:a", CONTEXT, "q", None, answer(), policy="off")
    assert await cache.store("tenant:a", CONTEXT, "q", None, answer())
    assert not await cache.store("tenant:a", CONTEXT, "q", None, answer())
    assert await cache.flush() == 1
    assert not await cache.store("tenant:a", CONTEXT, "q", None, answer())


async def test_entries_expire_after_their_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = await open_cache(tmp_path, clock=clock, ttl_s=60.0)
    try:
        await cache.store("tenant:a", CONTEXT, "q", None, answer())
        await cache.flush()
        clock.now += 59
        assert await cache.lookup("tenant:a", CONTEXT, "q", None, "exact") is not None
        clock.now += 2
        assert await cache.lookup("tenant:a", CONTEXT, "q", None, "exact") is None
        await cache.flush()
        assert cache.stats()["entries"] == 0
    finally:
        await cache.close()


async def test_least_recently_used_entries_are_evicted_beyond_max_entries(
    tmp_path: Path,
) -> None:
    cache = await open_cache(tmp_path, max_entries=3)
    vectors = unit_vectors(4)
    try:
        for i in range(3):
            await cache.store("tenant:a", CONTEXT, f"question {i}", vectors[i], answer())
        await cache.flush()
        assert await cache.lookup("tenant:a", CONTEXT, "question 0", None, "exact") is not None
        await cache.store("tenant:a", CONTEXT, "question 3", vectors[3], answer())
        await cache.flush()
        found = [await cache.lookup("tenant:a", CONTEXT, f"question {i}", None, "exact")
                 for i in range(4)]
        assert [hit is not None for hit in found] == [True, False, True, True]
    finally:
        await cache.close()


async def test_invalidate_one_entry_and_a_whole_namespace(cache: SemanticCache) -> None:
    vectors = unit_vectors(3)
    for i, namespace in enumerate(("tenant:a", "tenant:a", "tenant:b")):
        await cache.store(namespace, CONTEXT, f"question {i}", vectors[i], answer())
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, "question 0", None, "exact")
    assert hit is not None
    assert await cache.invalidate(hit.entry_id)
    assert not await cache.invalidate(hit.entry_id)
    assert await cache.lookup("tenant:a", CONTEXT, "question 0", vectors[0], "semantic") is None
    assert await cache.invalidate_namespace("tenant:a") == 1
    assert await cache.lookup("tenant:a", CONTEXT, "question 1", vectors[1], "semantic") is None
    assert await cache.lookup("tenant:b", CONTEXT, "question 2", vectors[2], "semantic")


async def test_concurrent_lookups_and_stores_see_whole_entries(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path, threshold=0.99, guards=False)
    vectors = unit_vectors(400, seed=3)
    try:
        for i in range(200):
            await cache.store("tenant:a", CONTEXT, f"q{i}", vectors[i], answer(f"a{i}"))
        await cache.flush()

        async def ask(i: int) -> bool:
            hit = await cache.lookup("tenant:a", CONTEXT, f"other {i}", vectors[i], "semantic")
            return hit is not None and hit.body["choices"][0]["message"]["content"] == f"a{i}"

        async def add(i: int) -> None:
            await cache.store("tenant:a", CONTEXT, f"q{i}", vectors[i], answer(f"a{i}"))
            await cache.flush()

        results = await asyncio.gather(*(ask(i) for i in range(200)),
                                       *(add(i) for i in range(200, 400)))
        assert all(results[:200])
        assert cache.stats()["entries"] == 400
        assert all(await asyncio.gather(*(ask(i) for i in range(400))))
    finally:
        await cache.close()


async def test_disabled_cache_neither_stores_nor_answers(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path, enabled=False)
    assert not cache.enabled
    assert not await cache.store("tenant:a", CONTEXT, "q", None, answer())
    assert await cache.lookup("tenant:a", CONTEXT, "q", None, "semantic") is None
    await cache.close()
    assert not (tmp_path / "cache.sqlite3").exists()


async def test_a_typo_match_never_crosses_namespaces_or_contexts(
    cache: SemanticCache, embedder: OnnxEmbedder
) -> None:
    await _store_typo(cache, embedder)
    vector = embedder.embed([CORRECTED])[0]
    assert await cache.lookup("tenant:a", CONTEXT, CORRECTED, None, "semantic") is not None
    assert await cache.lookup("tenant:b", CONTEXT, CORRECTED, vector, "semantic") is None
    assert await cache.lookup("tenant:a", "other-context", CORRECTED, vector, "semantic") is None


@pytest.mark.parametrize(("stored", "asked"), [
    ("Who finished fourth in the race?", "Who finished fourty in the race?"),
    ("Can I bake bread without yeast?", "Can I bake bread withot yeast?"),
    ("Is 500 grams of sugar too much?", "Is 500 gramms of sugar too much?"),
])
async def test_a_typo_read_as_a_number_negation_or_unit_is_no_typo_match(
    cache: SemanticCache, stored: str, asked: str
) -> None:
    await cache.store("tenant:a", CONTEXT, stored, unit_vectors(1)[0], answer())
    await cache.flush()
    assert await cache.lookup("tenant:a", CONTEXT, asked, None, "semantic") is None
    assert await cache.lookup("tenant:a", CONTEXT, stored.lower(), None, "semantic") is not None
