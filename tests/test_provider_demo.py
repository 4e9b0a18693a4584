"""Tests for gateway/upstream/providers/demo.py through a gateway: every choice streams, and
the demo's words are true about how it came to answer."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import GatewayFactory


def _demo(fallback: bool) -> dict[str, Any]:
    return {"providers": [{"name": "demo", "kind": "demo", "fallback": fallback}],
            "models": [{"name": "m", "provider": "demo", "tier": "cheap"}]}


async def test_two_streamed_choices_each_arrive_whole(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(_demo(fallback=True))
    body = {"model": "m", "n": 2, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Name two colours"}]}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 200
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    usage = None
    for line in (await resp.text()).splitlines():
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or "")
            if choice["finish_reason"]:
                finished[choice["index"]] = choice["finish_reason"]
    whole = await client.post("/v1/chat/completions", json={**body, "stream": False})
    answer = await whole.json()
    assert texts == {c["index"]: c["message"]["content"] for c in answer["choices"]}
    assert set(texts) == {0, 1} and finished == {0: "stop", 1: "stop"}
    assert usage is not None and usage["completion_tokens"] == answer["usage"][
        "completion_tokens"] == 2 * len(texts[0].split())


async def test_the_demo_says_no_real_provider_only_when_that_is_true(
    make_gateway: GatewayFactory,
) -> None:
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for fallback in (True, False):
        client = await make_gateway(_demo(fallback))
        answer = await (await client.post("/v1/chat/completions", json=ask)).json()
        text = answer["choices"][0]["message"]["content"]
        assert "built-in demo provider" in text and "no model was called" in text
        assert ("No real provider is configured" in text) is fallback
        assert ("GROQ_API_KEY" in text) is fallback
