"""The chat completions endpoint end to end, against a fake OpenAI-compatible provider."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient

from gateway.observability.dashboard.format import short_id
from tests.fake_openai import FakeOpenAI, Reply

USER = [{"role": "user", "content": "Say hello"}]


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


async def test_non_streaming_answer_passes_through_with_headers(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    resp = await client.post("/v1/chat/completions", json={
        "model": "small", "messages": USER, "temperature": 0.2, "seed": 7,
        "logit_bias": {"50256": -100},
    }, headers={"x-request-id": "abc-123"})
    assert resp.status == 200
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "Hello from the fake provider."
    assert resp.headers["x-request-id"] == "abc-123"
    assert resp.headers["x-gateway-deployment"] == "p1/up-small"
    assert resp.headers["x-gateway-attempts"] == "1"
    assert "upstream;dur=" in resp.headers["Server-Timing"]
    sent = fake.requests[0]
    assert sent["model"] == "up-small"
    assert sent["seed"] == 7 and sent["logit_bias"] == {"50256": -100}


async def test_stream_relays_chunks_and_ends_with_done(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    resp = await client.post("/v1/chat/completions",
                             json={"model": "small", "messages": USER, "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello from the fake provider."
    assert all("usage" not in c for c in chunks), "usage only when the client asks"
    assert fake.requests[0]["stream_options"] == {"include_usage": True}


async def test_stream_includes_usage_chunk_when_asked(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    resp = await client.post("/v1/chat/completions", json={
        "model": "small", "messages": USER, "stream": True,
        "stream_options": {"include_usage": True},
    })
    chunks = [json.loads(p) for p in sse_payloads(await resp.text())[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 11


async def test_unknown_model_is_404_in_openai_shape(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    resp = await client.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert fake.requests == []


async def test_provider_400_is_passed_back_without_failover(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    fake.script.append(Reply(kind="status", status=400))
    resp = await client.post("/v1/chat/completions", json={"model": "small", "messages": USER})
    assert resp.status == 400
    assert "fake says 400" in (await resp.json())["error"]["message"]


async def test_models_lists_public_names_and_auto(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    body = await (await client.get("/v1/models")).json()
    assert {m["id"] for m in body["data"]} == {"auto", "small"}
    assert (await client.get("/v1/models/small")).status == 200
    assert (await client.get("/v1/models/other")).status == 404


async def test_health_and_readiness(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, _ = one_upstream
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"


async def test_fresh_request_ids_differ_in_their_first_digits_and_short_ids_too(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    ids = []
    for _ in range(20):
        resp = await client.post("/v1/chat/completions", json={"model": "small"})  # a 400
        ids.append(resp.headers["x-request-id"])
    assert len(set(ids)) == 20
    starts = {i[:8] for i in ids}  # "req_" and four digits: what a narrow column shows
    assert len(starts) == 20
    assert len({short_id(i) for i in ids}) == 20
    long_client_ids = [f"my-application-request-{n:06d}" for n in (1, 2)]
    assert short_id(long_client_ids[0]) != short_id(long_client_ids[1])


CALLS = [{"id": f"call_{i}", "type": "function", "function": {"name": "w", "arguments": "{}"}}
         for i in (1, 2)]
ASKED = [*USER, {"role": "assistant", "content": None, "tool_calls": CALLS}]


def tool(call_id: str) -> dict[str, str]:
    return {"role": "tool", "tool_call_id": call_id, "content": "sunny"}


async def test_a_tool_message_answering_no_tool_call_is_400_before_the_provider(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    for messages, param in [
        ([*ASKED, tool("call_1"), tool("call_3")], "messages[3].tool_call_id"),
        ([*USER, tool("call_1")], "messages[1].tool_call_id"),
        ([*ASKED, {"role": "user", "content": "well?"}, tool("call_1")],
         "messages[3].tool_call_id"),
    ]:
        resp = await client.post("/v1/chat/completions",
                                 json={"model": "small", "messages": messages})
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param)
        assert f"'{param}'" in error["message"] and "names no tool call" in error["message"]
    assert fake.requests == []


async def test_tool_messages_answering_the_calls_before_them_reach_the_provider(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    messages = [*ASKED, tool("call_2"), tool("call_1"), {"role": "user", "content": "and?"}]
    resp = await client.post("/v1/chat/completions", json={"model": "small", "messages": messages})
    assert resp.status == 200
    assert fake.requests[0]["messages"] == messages
