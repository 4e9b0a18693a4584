"""Real recorded Anthropic and Gemini responses, replayed through the gateway to the openai SDK.

Each recording (``tests/data/provider_recordings``, sources in its ``SOURCES.md``) is served
byte for byte by ``tests/fake_recorded.py``, whole and cut into 7-byte pieces that split lines
and events. What the SDK receives is checked field by field against the recording's own values,
read here straight from the recorded JSON or events: text, tool names and their arguments as
JSON, the finish reason, usage with cached and reasoning tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from gateway.observability.access_log import ACCESS_LOGGER
from tests.conftest import GatewayFactory, model
from tests.fake_recorded import Replay, recorded, recording, replay_app

Json = dict[str, Any]
ENV = {"GEMINI_KEY": "test-gemini-key", "ANTHROPIC_KEY": "test-anthropic-key",
       "COMPAT_KEY": "test-compat-key"}
PIECES = [None, 7]
# What each provider's stop reason means in OpenAI's terms (their public documentation).
ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                    "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


@dataclass
class Expected:
    """What a recording says the answer is, in OpenAI's terms."""

    text: str = ""
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments as JSON)
    finish: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Upstreams:
    gateway: TestClient
    replay: Replay

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=str(self.gateway.make_url("/v1")), api_key="unused",
                                  max_retries=0)


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer, make_gateway: GatewayFactory) -> Upstreams:
    replay = Replay()
    server = await aiohttp_server(replay_app(replay))
    config = {
        "providers": [
            {"name": "gem", "kind": "gemini", "base_url": str(server.make_url("/v1beta")),
             "api_key_env": "GEMINI_KEY"},
            {"name": "ant", "kind": "anthropic", "base_url": str(server.make_url("/v1")),
             "api_key_env": "ANTHROPIC_KEY"},
            {"name": "oai", "kind": "openai", "base_url": str(server.make_url("/openai/v1")),
             "api_key_env": "COMPAT_KEY"},
        ],
        "models": [model("gemini", "gem", upstream_model="gemini-2.5-flash"),
                   model("claude", "ant", upstream_model="claude-sonnet-4-5"),
                   model("compat", "oai", upstream_model="llama-3.3-70b-versatile")],
    }
    return Upstreams(await make_gateway(config, env=ENV), replay)


# --- reading the recordings -----------------------------------------------------------------


def sse_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.startswith("data:"):
            yield line[5:].strip()


def sse_data(text: str) -> Iterator[Json]:
    return (json.loads(line) for line in sse_lines(text))


def anthropic_usage(expected: Expected, usage: Json) -> None:
    read, written = usage.get("cache_read_input_tokens") or 0, \
        usage.get("cache_creation_input_tokens") or 0
    expected.prompt_tokens = usage["input_tokens"] + read + written
    expected.completion_tokens = usage["output_tokens"]
    expected.cached_tokens = read


def anthropic_message(body: Json) -> Expected:
    expected = Expected(finish=ANTHROPIC_FINISH[body["stop_reason"]])
    for block in body["content"]:
        if block["type"] == "text":
            expected.text += block["text"]
        elif block["type"] == "tool_use":
            expected.calls.append((block["name"], block["input"]))
    anthropic_usage(expected, body["usage"])
    return expected


def anthropic_stream(text: str) -> Expected:
    expected, inputs, usage = Expected(), {}, {}
    for event in sse_data(text):
        kind = event["type"]
        if kind == "message_start":
            usage.update(event["message"]["usage"])
        elif kind == "content_block_start" and event["content_block"]["type"] == "tool_use":
            inputs[event["index"]] = (event["content_block"]["name"], [])
        elif kind == "content_block_delta" and event["delta"]["type"] == "text_delta":
            expected.text += event["delta"]["text"]
        elif kind == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            inputs[event["index"]][1].append(event["delta"]["partial_json"])
        elif kind == "message_delta":
            usage.update(event["usage"])
            expected.finish = ANTHROPIC_FINISH[event["delta"]["stop_reason"]]
    # A tool that takes no input streams one empty fragment: its arguments are the object {}.
    expected.calls = [(name, json.loads("".join(parts) or "{}")) for name, parts in inputs.values()]
    anthropic_usage(expected, usage)
    return expected


def gemini_answer(chunks: list[Json]) -> Expected:
    expected = Expected()
    for chunk in chunks:
        candidate = chunk["candidates"][0]
        for part in candidate.get("content", {}).get("parts", []):
            if "functionCall" in part:
                call = part["functionCall"]
                expected.calls.append((call["name"], call.get("args", {})))
            elif "text" in part and not part.get("thought"):
                expected.text += part["text"]
        if "finishReason" in candidate:
            reason = GEMINI_FINISH[candidate["finishReason"]]
            expected.finish = "tool_calls" if expected.calls and reason == "stop" else reason
    meta = chunks[-1]["usageMetadata"]
    expected.prompt_tokens = meta["promptTokenCount"] + meta.get("toolUsePromptTokenCount", 0)
    expected.completion_tokens = meta.get("candidatesTokenCount", 0) + \
        meta.get("thoughtsTokenCount", 0)
    expected.cached_tokens = meta.get("cachedContentTokenCount", 0)
    expected.reasoning_tokens = meta.get("thoughtsTokenCount", 0)
    return expected


def openai_answer(chunks: list[Json]) -> Expected:
    """A whole answer, or a stream's chunks: OpenAI's own shape, taken as it stands."""
    expected, calls = Expected(), {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            part = choice.get("message") or choice.get("delta") or {}
            expected.text += part.get("content") or ""
            for call in part.get("tool_calls") or ():
                name, args = calls.setdefault(call.get("index", len(calls)), ["", ""])
                function = call.get("function") or {}
                calls[call.get("index", len(calls) - 1)] = [
                    name + (function.get("name") or ""), args + (function.get("arguments") or "")]
            expected.finish = choice.get("finish_reason") or expected.finish
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if usage:
            expected.prompt_tokens = usage["prompt_tokens"]
            expected.completion_tokens = usage["completion_tokens"]
            expected.cached_tokens = (usage.get("prompt_tokens_details") or {}).get(
                "cached_tokens", 0)
            expected.reasoning_tokens = (usage.get("completion_tokens_details") or {}).get(
                "reasoning_tokens", 0)
    expected.calls = [(name, json.loads(args or "{}")) for name, args in calls.values()]
    return expected


def expected_of(name: str) -> Expected:
    rec = recording(name)
    if name.startswith("oai_"):
        payloads = [e for e in sse_lines(rec.text) if e != "[DONE]"]
        return openai_answer([json.loads(p) for p in payloads] if ".sse" in name else [rec.json])
    if name.startswith("anth_"):
        return anthropic_stream(rec.text) if ".sse" in name else anthropic_message(rec.json)
    return gemini_answer(list(sse_data(rec.text)) if ".sse" in name else [rec.json])


def served_model(name: str) -> str:
    return {"anth": "claude", "gem": "gemini", "oai": "compat"}[name.split("_")[0]]


def check_usage(usage: Any, expected: Expected) -> None:
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == \
        (expected.prompt_tokens, expected.completion_tokens)
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    assert (cached or 0) == expected.cached_tokens
    details = usage.completion_tokens_details
    assert ((details.reasoning_tokens if details else 0) or 0) == expected.reasoning_tokens


# --- successful answers -----------------------------------------------------------------------

ANSWERS = [n for n in recorded("anth_") + recorded("gem_") + recorded("oai_")
           if recording(n).status == 200 and "overloaded" not in n and "blocked" not in n]


@pytest.mark.parametrize("piece_bytes", PIECES)
@pytest.mark.parametrize("name", [n for n in ANSWERS if ".sse" not in n])
async def test_recorded_answer_arrives_field_by_field(
    upstreams: Upstreams, name: str, piece_bytes: int | None
) -> None:
    upstreams.replay.serve, upstreams.replay.piece_bytes = name, piece_bytes
    expected = expected_of(name)
    async with upstreams.sdk() as sdk:
        reply = await sdk.chat.completions.create(
            model=served_model(name), messages=[{"role": "user", "content": "Hi"}])
    choice = reply.choices[0]
    assert (choice.message.content or "") == expected.text
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        expected.calls
    assert choice.finish_reason == expected.finish
    check_usage(reply.usage, expected)


@pytest.mark.parametrize("piece_bytes", PIECES)
@pytest.mark.parametrize("name", [n for n in ANSWERS if ".sse" in n])
async def test_recorded_stream_arrives_field_by_field(
    upstreams: Upstreams, name: str, piece_bytes: int | None
) -> None:
    upstreams.replay.serve, upstreams.replay.piece_bytes = name, piece_bytes
    expected = expected_of(name)
    async with upstreams.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model=served_model(name), messages=[{"role": "user", "content": "Hi"}],
            stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert "".join(d.delta.content or "" for d in deltas) == expected.text
    arguments: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for d in deltas:
        for call in d.delta.tool_calls or ():
            if call.function and call.function.name:
                names[call.index] = call.function.name
            if call.function and call.function.arguments:
                arguments.setdefault(call.index, []).append(call.function.arguments)
    # Each call's arguments, joined, are JSON a client can parse: "{}" for a tool with no input.
    calls = [(names[i], json.loads("".join(arguments.get(i, [])))) for i in sorted(names)]
    assert calls == expected.calls
    assert [d.finish_reason for d in deltas if d.finish_reason] == [expected.finish]
    check_usage(chunks[-1].usage, expected)


# --- failures ---------------------------------------------------------------------------------


def access_records(caplog: pytest.LogCaptureFixture) -> list[Json]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


@pytest.mark.parametrize(("name", "status"), [
    ("anth_err_400.json", 400),  # the request's own fault: passed on
    ("anth_err_529.json", 502),  # overloaded: the deployment's fault, and no other to try
    ("gem_err_400_apikey.json", 502),  # a bad key is the deployment's fault
    ("gem_err_403_disabled.json", 502),
    ("gem_err_404_model.json", 502),
])
async def test_recorded_error_keeps_the_providers_words_and_counts_the_call(
    upstreams: Upstreams, caplog: pytest.LogCaptureFixture, name: str, status: int
) -> None:
    upstreams.replay.serve = name
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        resp = await upstreams.gateway.post("/v1/chat/completions", json={
            "model": served_model(name), "messages": [{"role": "user", "content": "Hi"}]})
    assert resp.status == status
    body = await resp.json()
    assert recording(name).json["error"]["message"] in body["error"]["message"]
    [line] = access_records(caplog)
    assert line["status"] == status
    assert line["attempts"] == 1, "one upstream call was made"


@pytest.mark.parametrize(("name", "rest_s"), [
    ("gem_err_429.json", 40),  # RetryInfo.retryDelay "40s"
    ("anth_err_429.json", 30),  # no Retry-After recorded: the configured cooldown
])
async def test_recorded_429_from_every_deployment_is_a_429_with_the_rest(
    upstreams: Upstreams, name: str, rest_s: int
) -> None:
    upstreams.replay.serve = name
    request = {"model": served_model(name), "messages": [{"role": "user", "content": "Hi"}]}
    first = await upstreams.gateway.post("/v1/chat/completions", json=request)
    assert first.status == 429
    assert (await first.json())["error"]["code"] == "upstream_rate_limited"
    assert first.headers["Retry-After"] == str(rest_s)


async def test_recorded_retry_delay_rests_the_deployment_and_the_next_client_hears_it(
    upstreams: Upstreams,
) -> None:
    upstreams.replay.serve = "gem_err_429.json"
    request = {"model": "gemini", "messages": [{"role": "user", "content": "Hi"}]}
    assert (await upstreams.gateway.post("/v1/chat/completions", json=request)).status == 429
    again = await upstreams.gateway.post("/v1/chat/completions", json=request)
    assert again.status == 429 and len(upstreams.replay.paths) == 1, "no second upstream call"
    assert (await again.json())["error"]["code"] == "upstream_rate_limited"
    assert 0 < int(again.headers["Retry-After"]) <= 40


async def test_recorded_429_with_openai_sdk_raises_rate_limit_error(upstreams: Upstreams) -> None:
    upstreams.replay.serve = "gem_err_429.json"
    async with upstreams.sdk() as sdk:
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.chat.completions.create(
                model="gemini", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["Retry-After"] == "40"


@pytest.mark.parametrize("piece_bytes", PIECES)
async def test_recorded_overload_mid_stream_ends_with_the_error_event(
    upstreams: Upstreams, piece_bytes: int | None
) -> None:
    name = "anth_stream_overloaded_mid.sse"
    upstreams.replay.serve, upstreams.replay.piece_bytes = name, piece_bytes
    sent = "".join(e["delta"]["text"] for e in sse_data(recording(name).text)
                   if e["type"] == "content_block_delta")
    received = []
    async with upstreams.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == sent


async def test_recorded_overload_before_any_content_fails_over_as_a_502(
    upstreams: Upstreams,
) -> None:
    upstreams.replay.serve = "anth_stream_overloaded_early.sse"
    resp = await upstreams.gateway.post("/v1/chat/completions", json={
        "model": "claude", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert resp.status == 502
    assert "Overloaded" in (await resp.json())["error"]["message"]
