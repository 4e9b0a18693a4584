"""An Anthropic-format request to an Anthropic upstream passes through with nothing lost: the
client's body (thinking blocks and signatures, ``cache_control``, ``top_k``, ``thinking``), its
``anthropic-beta``, and the upstream's answer and events, checked against real recordings."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message

from tests import fake_anthropic as fa
from tests.dialect_fixtures import Upstreams
from tests.test_messages_api import USER, WEATHER, sdk

Json = dict[str, Any]
RECORDINGS = Path("/work/shared/data/provider_recordings")
THINKING = [
    {"type": "thinking", "thinking": "The user greets me.", "signature": "EqQBCkYIARgCKkD="},
    {"type": "text", "text": "Hello!"},
]


def recorded_events(name: str) -> list[fa.Event]:
    """A recorded Anthropic event stream as the fake's (event, data) pairs."""
    raw = (RECORDINGS / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    events = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("event", ""), orjson.loads(fields["data"])))
    return events


def thinking_answer() -> fa.Answer:
    """An answer with a signed thinking block before its text, whole and streamed."""
    body = {"id": "msg_think1", "type": "message", "role": "assistant", "model": "claude-up",
            "content": THINKING, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": fa.usage()}
    start = {**body, "content": [], "stop_reason": None}
    events: list[fa.Event] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "",
                                                   "signature": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "thinking_delta", "thinking": THINKING[0]["thinking"]}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "signature_delta", "signature": THINKING[0]["signature"]}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        *fa._text_block(1, ["Hello!"]),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                              "stop_sequence": None},
                           "usage": {"output_tokens": 6}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return fa.Answer(body, events)


def rich_request() -> Json:
    """A request with everything a translation would lose."""
    return {
        "model": "claude", "max_tokens": 2048, "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "You are terse.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": THINKING},
            {"role": "user", "content": [{"type": "text", "text": "Again",
                                          "cache_control": {"type": "ephemeral"}}]},
        ],
    }


async def test_request_reaches_anthropic_unchanged_but_for_the_model(upstreams: Upstreams) -> None:
    upstreams.anthropic.script.append(thinking_answer())
    sent = rich_request()
    resp = await upstreams.client.post("/v1/messages", json=sent, headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert resp.status == 200, await resp.text()
    received = upstreams.anthropic.requests[-1]
    assert received.body == {**sent, "model": "claude-up"}
    assert received.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert (await resp.json())["content"] == THINKING


async def test_streamed_thinking_and_signature_reach_the_sdk(upstreams: Upstreams) -> None:
    upstreams.anthropic.script.append(thinking_answer())
    body = rich_request()
    extra = {"top_k": body.pop("top_k")}  # this SDK release has no top_k parameter
    async with sdk(upstreams) as client, client.messages.stream(**body, extra_body=extra) as stream:
        deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]  # type: ignore[union-attr]
        final = await stream.get_final_message()
    assert deltas == ["thinking_delta", "signature_delta", "text_delta"]
    assert [b.model_dump(exclude_none=True) for b in final.content] == THINKING


async def test_recorded_message_comes_back_as_recorded(upstreams: Upstreams) -> None:
    recorded = orjson.loads((RECORDINGS / "anth_text_tool.json").read_bytes())
    upstreams.anthropic.script.append(fa.Answer(recorded))
    async with sdk(upstreams) as client:
        reply = await client.messages.create(model="claude", max_tokens=1024, messages=USER)  # type: ignore[arg-type]
    assert reply == Message.model_validate(recorded)


@pytest.mark.parametrize("recording", ["anth_stream_text_tool_sdkfixture.sse",
                                       "anth_stream_2tools_noargs.sse.gz"])
async def test_recorded_stream_relayed_event_for_event(
    upstreams: Upstreams, recording: str
) -> None:
    events = recorded_events(recording)
    upstreams.anthropic.script.append(fa.Answer({}, events))
    resp = await upstreams.client.post("/v1/messages", json={
        "model": "claude", "max_tokens": 512, "messages": USER, "stream": True})
    relayed = [(f["event"], orjson.loads(f["data"])) for f in _frames(await resp.text())]
    assert relayed == events


def _frames(text: str) -> list[dict[str, str]]:
    return [dict(line.split(": ", 1) for line in frame.splitlines())
            for frame in text.split("\n\n") if frame.strip()]


async def test_translated_message_has_the_recorded_messages_fields(upstreams: Upstreams) -> None:
    recorded = orjson.loads((RECORDINGS / "anth_text_tool.json").read_bytes())
    upstreams.call("gpt", "submit_analysis", {"summary": "short"})
    resp = await upstreams.client.post("/v1/messages", json={
        "model": "gpt", "max_tokens": 64, "messages": USER,
        "tools": [{"name": "submit_analysis", "input_schema": {"type": "object"}}]})
    ours = await resp.json()
    assert set(ours) == set(recorded)
    assert set(ours["content"][0]) == set(recorded["content"][1]) - {"caller"}
    assert ours["content"][0]["input"] == {"summary": "short"}
    assert set(ours["usage"]) <= set(recorded["usage"])


async def test_server_tools_and_images_in_tool_results_reach_only_anthropic(
    upstreams: Upstreams,
) -> None:
    body = {"max_tokens": 256, "tools": [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}, WEATHER],
        "messages": [
            {"role": "user", "content": "What does this screenshot show?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "image", "source": {
                                              "type": "base64", "media_type": "image/png",
                                              "data": "iVBORw0KGgo="}}]}]}]}
    passed = await upstreams.client.post("/v1/messages", json={**body, "model": "claude"})
    assert passed.status == 200
    assert upstreams.anthropic.requests[-1].body == {**body, "model": "claude-up"}
    refused = await upstreams.client.post("/v1/messages", json={**body, "model": "gpt"})
    error = await refused.json()
    assert refused.status == 400 and error["type"] == "error"
    assert "messages[2].content[0].content[0]" in error["error"]["message"]
    assert not upstreams.openai.requests, "never sent, never silently cut down"


async def test_anthropic_upstream_errors_keep_their_sdk_classes(upstreams: Upstreams) -> None:
    upstreams.anthropic.script.append(fa.failure(400, "invalid_request_error", "bad thing"))
    async with sdk(upstreams) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="claude", max_tokens=16, messages=USER)  # type: ignore[arg-type]
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert "bad thing" in caught.value.message


async def test_recorded_claude_session_replays_through_the_gateway(upstreams: Upstreams) -> None:
    """Turn one: a real streamed tool_use; the tool result goes back; turn two: real text."""
    for name in ("anth_stream_tool.sse", "anth_stream_text.sse"):
        upstreams.anthropic.script.append(fa.Answer({}, recorded_events(name)))
    expected_text = "".join(d["delta"]["text"] for kind, d in recorded_events(
        "anth_stream_text.sse") if kind == "content_block_delta")
    history: list[Json] = [{"role": "user", "content": "Weather in Paris, then a pirate name?"}]
    async with sdk(upstreams) as client:
        async with client.messages.stream(model="claude", max_tokens=1024, messages=history,  # type: ignore[arg-type]
                                          tools=[WEATHER], system="You are terse.") as stream:
            first = await stream.get_final_message()
        call = next(b for b in first.content if b.type == "tool_use")
        history += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                    {"role": "user", "content": [{"type": "tool_result",
                                                  "tool_use_id": call.id, "content": "18 C"}]}]  # type: ignore[union-attr]
        async with client.messages.stream(model="claude", max_tokens=1024, messages=history,  # type: ignore[arg-type]
                                          tools=[WEATHER], system="You are terse.") as stream:
            second = await stream.get_final_message()
    assert call.name == "get_weather" and first.stop_reason == "tool_use"  # type: ignore[union-attr]
    assert second.content[0].text == expected_text  # type: ignore[union-attr]
    sent = upstreams.anthropic.requests[-1].body["messages"]
    assert sent[-1]["content"][0]["tool_use_id"] == call.id  # type: ignore[union-attr]


async def test_recorded_overload_mid_stream_reaches_the_sdk_as_an_error(
    upstreams: Upstreams,
) -> None:
    upstreams.anthropic.script.append(
        fa.Answer({}, recorded_events("anth_stream_overloaded_mid.sse")))
    async with sdk(upstreams) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(model="claude", max_tokens=64,
                                              messages=USER) as stream:  # type: ignore[arg-type]
                async for _ in stream:
                    pass
    assert "overloaded_error" in str(caught.value.body)


async def test_thinking_reaches_the_client_before_the_answer_text_exists(
    upstreams: Upstreams,
) -> None:
    """The upstream stops after its thinking block: had the gateway held thinking back until
    the first text (as it holds a stream's head for failover), the client would get nothing."""
    answer = thinking_answer()
    stop_at = next(i for i, (kind, _) in enumerate(answer.events)
                    if kind == "content_block_stop")
    upstreams.anthropic.script.append(fa.Answer(answer.body, answer.events, end_after=stop_at))
    resp = await upstreams.client.post("/v1/messages", json={**rich_request(), "stream": True})
    relayed = [f["event"] for f in _frames(await resp.text())]
    assert relayed[:5] == ["message_start", "content_block_start", "ping",
                           "content_block_delta", "content_block_delta"]
