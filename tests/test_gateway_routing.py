"""``model: "auto"`` end to end: the real embedder worker, the shipped routes, two tiers of fake
providers, and cheap-first escalation (gateway/api/chat.py, gateway/pipeline/dispatch.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.routing.context import ROUTER
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from tests.conftest import ROOT, GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app

MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
Tiers = tuple[TestClient, FakeOpenAI, FakeOpenAI]


def _config(cheap_url: str, strong_url: str, embedder: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": [openai_provider("cheap-p", cheap_url),
                      openai_provider("strong-p", strong_url)],
        "models": [model("small", "cheap-p", "cheap", output_price_per_mtok=1.0),
                   model("large", "strong-p", "reasoning", output_price_per_mtok=10.0)],
        "embedder": embedder,
    }


@pytest.fixture
async def tiers(aiohttp_server: Any, make_gateway: GatewayFactory, tmp_path: Path) -> Tiers:
    cheap, strong = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(cheap))
    s2: TestServer = await aiohttp_server(fake_openai_app(strong))
    client = await make_gateway(_config(str(s1.make_url("/v1")), str(s2.make_url("/v1")),
                                        {"model_dir": str(MODEL_DIR)}))
    await client.app[EMBEDDER_POOL].wait_live(1)
    await client.app[ROUTER].loaded.wait()
    yield client, cheap, strong
    cheap.release.set()
    strong.release.set()


async def _auto(client: TestClient, text: str, **extra: Any) -> Any:
    return await client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": text}], **extra})


async def test_code_goes_to_the_reasoning_tier_and_says_why(tiers: Tiers) -> None:
    client, cheap, strong = tiers
    resp = await _auto(client, "Write a Python function that merges two sorted lists.")
    assert resp.status == 200
    assert resp.headers["x-gateway-route"] == "code"
    assert resp.headers["x-gateway-tier"] == "reasoning"
    assert float(resp.headers["x-gateway-route-score"]) > 0
    assert "embed;dur=" in resp.headers["Server-Timing"]
    assert len(strong.requests) == 1 and cheap.requests == []


async def test_chit_chat_goes_to_the_cheap_tier(tiers: Tiers) -> None:
    client, cheap, strong = tiers
    resp = await _auto(client, "Hey there, how is your day going?")
    assert resp.headers["x-gateway-tier"] == "cheap"
    assert resp.headers["x-gateway-route"] == "chit_chat"
    assert len(cheap.requests) == 1 and strong.requests == []


async def test_an_explicit_model_skips_the_router(tiers: Tiers) -> None:
    client, cheap, _ = tiers
    resp = await client.post("/v1/chat/completions", json={
        "model": "small", "messages": [{"role": "user", "content": "Write a sorting function"}]})
    assert resp.status == 200 and "x-gateway-route" not in resp.headers
    assert len(cheap.requests) == 1


async def test_a_truncated_cheap_answer_escalates_and_both_calls_are_paid(tiers: Tiers) -> None:
    client, cheap, strong = tiers
    cheap.script.append(Reply(finish_reason="length"))
    resp = await _auto(client, "Hi! How are you doing today?")
    assert resp.status == 200
    assert resp.headers["x-gateway-escalated"] == "cheap->reasoning: truncated"
    assert resp.headers["x-gateway-tier"] == "reasoning"
    assert len(cheap.requests) == 1 and len(strong.requests) == 1
    app = client.server.app
    await app[LEDGER_KEY].flush()
    (row,) = await recent(app[STORE_KEY])
    words = len(Reply().text.split())
    assert row.escalations == 1
    assert row.cost == pytest.approx(words * 1.0 / 1e6 + words * 10.0 / 1e6)


async def test_invalid_json_when_json_was_asked_escalates(tiers: Tiers) -> None:
    client, cheap, strong = tiers
    cheap.script.append(Reply(text="not json at all"))
    strong.script.append(Reply(text=json.dumps({"city": "Oslo"})))
    resp = await _auto(client, "Hello! Reply in JSON please.",
                       response_format={"type": "json_object"})
    body = await resp.json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Oslo"}
    assert resp.headers["x-gateway-escalated"].endswith("invalid_json")


async def test_a_stream_escalates_when_every_cheap_deployment_fails(tiers: Tiers) -> None:
    client, cheap, strong = tiers
    cheap.script.append(Reply(kind="status", status=503))
    resp = await _auto(client, "Good morning, how are you?", stream=True)
    text = await resp.text()
    assert resp.headers["x-gateway-escalated"] == "cheap->reasoning: tier_failed"
    assert text.rstrip().endswith("data: [DONE]")
    assert len(strong.requests) == 1


async def test_without_an_embedder_auto_takes_the_default_tier(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    cheap, strong = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(cheap))
    s2: TestServer = await aiohttp_server(fake_openai_app(strong))
    client = await make_gateway(_config(str(s1.make_url("/v1")), str(s2.make_url("/v1")),
                                        {"enabled": False}))
    await client.app[ROUTER].loaded.wait()
    resp = await _auto(client, "Write a Python function that merges two sorted lists.")
    assert resp.status == 200
    assert resp.headers["x-gateway-tier"] == "cheap"
    assert resp.headers["x-gateway-route-reason"].startswith("no_embedding")
