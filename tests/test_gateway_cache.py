"""The semantic cache on the chat path, end to end with the real embedder worker
(gateway/pipeline/caching.py, gateway/api/chat.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.cache.context import CACHE
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from tests.conftest import ROOT, GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV, bearer, new_tenant_key
from tests.test_chat_api import sse_payloads
from tests.test_streaming import BODY, event, gateway_on, text_of
from tests.test_streaming_plain import DONE, WORDS, Paced, paced_words

Cached = tuple[TestClient, FakeOpenAI]


async def _cached_gateway(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory,
                          **cache: Any) -> Cached:
    """A gateway with the semantic cache on (``cache``: more ``[cache]`` settings) and its
    embedder worker live."""
    fake, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1", input_price_per_mtok=1.0, output_price_per_mtok=2.0)],
        "embedder": {"model_dir": str(ROOT / "models" / "all-MiniLM-L6-v2")},
        "cache": {"enabled": True, **cache},
    })
    await client.app[EMBEDDER_POOL].wait_live(1)
    return client, fake


@pytest.fixture
async def cached(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory) -> Cached:
    return await _cached_gateway(fake_openai, make_gateway)


async def _ask(client: TestClient, text: str, headers: dict[str, str] | None = None,
               **extra: Any) -> Any:
    resp = await client.post("/v1/chat/completions", headers=headers or {}, json={
        "model": "small", "messages": [{"role": "user", "content": text}], **extra})
    assert resp.status == 200, await resp.text()
    await resp.read()
    await client.app[CACHE].flush()  # the cache writes in batches; make this one visible
    return resp


async def _ask_after(cached: Cached, stored: str, asked: str) -> tuple[Any, int]:
    """Ask ``stored``, then ``asked``: the second answer, and how many requests reached the
    upstream in all."""
    client, fake = cached
    await _ask(client, stored)
    answered = await _ask(client, asked)
    return answered, len(fake.requests)


async def test_a_repeat_is_an_exact_hit_that_costs_nothing(cached: Cached) -> None:
    client, fake = cached
    first = await _ask(client, "What is the capital of France?")
    again = await _ask(client, "What is the capital of France?")
    assert first.headers["x-gateway-cache"] == "miss"
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.headers["x-gateway-cache-kind"] == "exact"
    assert json.loads(await again.text())["choices"][0]["message"]["content"] == Reply().text
    assert len(fake.requests) == 1
    app = client.server.app
    await app[LEDGER_KEY].flush()
    hit = next(r for r in await recent(app[STORE_KEY]) if r.cache == "hit")
    assert hit.cost == 0 and hit.saved_cost > 0


async def test_a_paraphrase_is_a_semantic_hit_and_a_negation_is_not(cached: Cached) -> None:
    client, fake = cached
    await _ask(client, "How do I reset my password?")
    paraphrase = await _ask(client, "How can I reset my password?")
    assert paraphrase.headers["x-gateway-cache"] == "hit"
    assert paraphrase.headers["x-gateway-cache-kind"] == "semantic"
    negated = await _ask(client, "How do I not reset my password?")
    assert negated.headers["x-gateway-cache"] == "miss"
    assert len(fake.requests) == 2


@pytest.mark.parametrize(("stored", "asked"), [
    # stored under its folded "faucet"'s vector
    ("how to fix a leaky fauset", "How do I fix a leaky faucet?"),
    # folded, the stored text but for case and "?", which the model scores at 0.935
    ("How many calories are in an avocado?", "how many calroies are in an avocado"),
])
async def test_a_typo_on_either_side_is_served_as_a_semantic_hit(
        cached: Cached, stored: str, asked: str) -> None:
    answered, upstream = await _ask_after(cached, stored, asked)
    assert answered.headers["x-gateway-cache"] == "hit"
    assert answered.headers["x-gateway-cache-kind"] == "semantic"
    assert upstream == 1


async def test_a_typo_of_a_stored_prompt_is_a_semantic_hit_and_a_repeat_an_exact_one(
        cached: Cached) -> None:
    client, fake = cached
    await _ask(client, "how to fix a leaky fauset")
    corrected = await _ask(client, "How to fix a leaky faucet?")
    assert corrected.headers["x-gateway-cache"] == "hit"
    assert corrected.headers["x-gateway-cache-kind"] == "semantic"  # not the same text
    repeat = await _ask(client, "How to fix a leaky fauset?")
    assert repeat.headers["x-gateway-cache-kind"] == "exact"  # the text as it was stored
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("stored", "asked"), [
    ("What are memos?", "What are memes?"),  # "memes" is one edit from "memos", and a plural
    # "fourth" would be a number the writer did not type (forty? fortieth?)
    ("Who finished fourth in the race?", "Who finished fourty in the race?"),
])
async def test_a_word_is_never_folded_into_another_word_or_one_the_guards_read(
        cached: Cached, stored: str, asked: str) -> None:
    answered, upstream = await _ask_after(cached, stored, asked)
    assert answered.headers["x-gateway-cache"] == "miss"
    assert upstream == 2


async def test_typos_are_not_folded_when_folding_is_off(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    cached = await _cached_gateway(fake_openai, make_gateway, fold_typos=False)
    asked, upstream = await _ask_after(cached, "how to fix a leaky fauset",
                                       "How do I fix a leaky faucet?")
    assert asked.headers["x-gateway-cache"] == "miss"
    assert upstream == 2


async def test_a_different_system_prompt_never_shares_an_answer(cached: Cached) -> None:
    client, fake = cached
    question = {"role": "user", "content": "Name a good book."}
    for system in ("You are a pirate.", "You are a librarian."):
        resp = await client.post("/v1/chat/completions", json={"model": "small", "messages": [
            {"role": "system", "content": system}, question]})
        assert resp.headers["x-gateway-cache"] == "miss"
        await client.app[CACHE].flush()
    assert len(fake.requests) == 2


async def test_no_cache_skips_the_lookup_and_no_store_skips_storing(cached: Cached) -> None:
    client, fake = cached
    await _ask(client, "Tell me a fact about owls.", headers={"Cache-Control": "no-store"})
    miss = await _ask(client, "Tell me a fact about owls.")
    assert miss.headers["x-gateway-cache"] == "miss", "no-store kept it out"
    bypass = await _ask(client, "Tell me a fact about owls.", headers={"Cache-Control": "no-cache"})
    assert bypass.headers["x-gateway-cache"] == "bypass"
    assert len(fake.requests) == 3


async def test_a_streamed_answer_is_stored_and_a_hit_replays_as_a_stream(cached: Cached) -> None:
    client, fake = cached
    await _ask(client, "Describe the moon in one line.", stream=True)
    resp = await client.post("/v1/chat/completions", json={
        "model": "small", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Describe the moon in one line."}]})
    assert resp.headers["x-gateway-cache"] == "hit"
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == Reply().text
    assert chunks[-1]["usage"] is not None
    assert len(fake.requests) == 1


async def test_a_stream_relayed_as_the_upstream_sent_it_is_stored_whole(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    words = [event({"content": w}) for w in WORDS]
    paced = Paced(paced_words(words, event({}, "stop") + DONE))
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider, cache={
        "enabled": True}, embedder={"model_dir": str(ROOT / "models" / "all-MiniLM-L6-v2")})
    await client.app[EMBEDDER_POOL].wait_live(1)
    relayed = await paced.read(client)
    assert all(w in relayed for w in words), "the words went out as the upstream's bytes"
    await client.app[CACHE].flush()
    again = await client.post("/v1/chat/completions", json=BODY)
    assert again.headers["x-gateway-cache"] == "hit"
    assert text_of(await again.read()) == "Counting:" + "".join(WORDS)


async def test_truncated_and_failed_answers_are_not_stored(cached: Cached) -> None:
    client, fake = cached
    fake.script.append(Reply(finish_reason="length"))
    await _ask(client, "Write a haiku about rain.")
    again = await _ask(client, "Write a haiku about rain.")
    assert again.headers["x-gateway-cache"] == "miss"


async def test_tenants_never_read_each_others_entries(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1")],
        "tenants": {"bootstrap": False, "tokenizer": ""},
        "cache": {"enabled": True},
    }, env=GATEWAY_ENV)
    keys = [await new_tenant_key(client, name) for name in ("acme", "globex")]
    first = await _ask(client, "What is our refund policy?", headers=bearer(keys[0]))
    other = await _ask(client, "What is our refund policy?", headers=bearer(keys[1]))
    own = await _ask(client, "What is our refund policy?", headers=bearer(keys[0]))
    assert [r.headers["x-gateway-cache"] for r in (first, other, own)] == ["miss", "miss", "hit"]
    assert len(fake.requests) == 2


async def test_entry_names_are_opaque_per_tenant_and_the_admin_resolves_them(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    """Two tenants sharing a namespace see one entry under unrelated names, neither its row id;
    the admin invalidates it by a tenant's name and that tenant."""
    fake, url = fake_openai
    shared = {"namespace": "shared"}
    client = await make_gateway({
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1")],
        "tenants": {"bootstrap": False, "tokenizer": ""},
        "cache": {"enabled": True, "tenants": {"acme": shared, "globex": shared}},
    }, env=GATEWAY_ENV)
    keys = [await new_tenant_key(client, name) for name in ("acme", "globex")]
    questions = [f"What is our refund policy for product {n}?" for n in range(3)]
    for q in questions:
        await _ask(client, q, headers=bearer(keys[0]))
    names = {tenant: [(await _ask(client, q, headers=bearer(key))).headers[
        "x-gateway-cache-entry"] for q in questions] for tenant, key in zip(
            ("acme", "globex"), keys, strict=True)}
    assert len(set(names["acme"]) | set(names["globex"])) == 6, "per tenant, per entry"
    for name in names["acme"] + names["globex"]:
        assert name.startswith("ce_") and len(name) == 19
        assert int(name[3:], 16) > 3, "not the row id (1, 2, 3)"
    admin = bearer(ADMIN_KEY)
    wrong = await client.delete(f"/admin/cache/entries/{names['acme'][0]}?tenant=globex",
                                headers=admin)
    assert wrong.status == 404, "a name means nothing for another tenant"
    resp = await client.delete(f"/admin/cache/entries/{names['acme'][0]}?tenant=acme",
                               headers=admin)
    assert resp.status == 200 and (await resp.json())["invalidated"] == 1
    again = await _ask(client, questions[0], headers=bearer(keys[1]))
    assert again.headers["x-gateway-cache"] == "miss"
    assert len(fake.requests) == 4
