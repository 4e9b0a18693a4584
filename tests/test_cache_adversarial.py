"""The adversarial suite (tests/data/cache_adversarial.json) through the real model, the real
hnswlib graph and SQLite, at the default threshold: no near-duplicate that differs in meaning is
served (negation, numbers, entities, operand order, units, antonyms, comparatives, another system
prompt), while at least 95% of the paraphrase controls still hit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.cache.fingerprint import cache_text, fingerprint
from gateway.cache.semantic_cache import SemanticCache
from gateway.core.cache_settings import DEFAULT_THRESHOLD
from gateway.core.chat import ChatRequest, parse_chat_request
from tests.cache_fixtures import ROOT, answer, load_embedder, open_cache

SUITE = json.loads((ROOT / "tests" / "data" / "cache_adversarial.json").read_text("utf-8"))
CASES: list[dict[str, Any]] = SUITE["cases"]


def _request(variant: str | dict[str, str], system: str | None = None) -> ChatRequest:
    text = variant if isinstance(variant, str) else variant["text"]
    if isinstance(variant, dict):
        system = variant.get("system")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    return parse_chat_request(orjson.dumps({"model": "auto", "messages": messages}))


async def _ask(cache: SemanticCache, embedder: OnnxEmbedder, namespace: str,
               request: ChatRequest) -> bool:
    text = cache_text(request)
    vector = embedder.embed([text])[0]
    hit = await cache.lookup(namespace, fingerprint(request, "auto"), text, vector, "semantic")
    return hit is not None


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return load_embedder()


@pytest.fixture
async def stocked(tmp_path: Path, embedder: OnnxEmbedder) -> AsyncIterator[SemanticCache]:
    cache = await open_cache(tmp_path)
    for i, case in enumerate(CASES):
        request = _request(case["stored"], case.get("system"))
        text = cache_text(request)
        await cache.store(f"case:{i}", fingerprint(request, "auto"), text,
                          embedder.embed([text])[0], answer(f"answer {i}"))
    await cache.flush()
    yield cache
    await cache.close()


def test_suite_covers_every_category() -> None:
    categories = {case["category"] for case in CASES}
    assert categories >= {"negation", "numbers", "entities", "order", "units", "system_prompt"}
    assert sum(len(case["must_hit"]) for case in CASES) >= 40


async def test_no_false_hits_and_paraphrases_still_hit(
    stocked: SemanticCache, embedder: OnnxEmbedder
) -> None:
    assert stocked.settings.threshold == DEFAULT_THRESHOLD
    false_hits, missed = [], []
    controls = 0
    for i, case in enumerate(CASES):
        for variant in case["must_miss"]:
            if await _ask(stocked, embedder, f"case:{i}", _request(variant)):
                false_hits.append((case["stored"], variant))
        for variant in case["must_hit"]:
            controls += 1
            request = _request(variant, case.get("system") if isinstance(variant, str) else None)
            if not await _ask(stocked, embedder, f"case:{i}", request):
                missed.append((case["stored"], variant))
    assert false_hits == []
    assert len(missed) <= 0.05 * controls, missed


FORMS = [  # (stored, the same question in another form, a neighbour that asks something else)
    ("How many moons does Jupiter have?", "What is the number of moons of Jupiter?",
     "How many moons does Saturn have?"),
    ("What causes earthquakes?", "Could you tell me what causes earthquakes?",
     "Could you tell me what does not cause earthquakes?"),
    ("What does the static keyword do in Java?",
     "What is the purpose of the static keyword in Java?",
     "What is the purpose of the static keyword in C++?"),
    ("Why is my SQL query so slow?", "What makes my SQL query so slow?",
     "What makes my SQL query so fast?"),
]


async def test_question_forms_are_served_and_their_neighbours_are_not(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    cache = await open_cache(tmp_path)
    try:
        assert cache.settings.threshold == DEFAULT_THRESHOLD
        for i, (stored, _same, _other) in enumerate(FORMS):
            request = _request(stored)
            text = cache_text(request)
            await cache.store(f"form:{i}", fingerprint(request, "auto"), text,
                              embedder.embed([text])[0], answer(f"answer {i}"))
        await cache.flush()
        for i, (_stored, same, other) in enumerate(FORMS):
            assert await _ask(cache, embedder, f"form:{i}", _request(same)), same
            assert not await _ask(cache, embedder, f"form:{i}", _request(other)), other
    finally:
        await cache.close()
