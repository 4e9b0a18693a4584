"""Damaged provider answers reach clients of every dialect as a whole answer or a clean error.

Each round asks one of three providers (OpenAI-compatible, Anthropic, Gemini) through one of
the three client dialects (chat completions, Anthropic's Messages, OpenAI's Responses), streamed
or not, with the cache on and each prompt asked again; the provider's answer is damaged at
random: values of other JSON types (negative and huge token counts among them), fields dropped
or added, bytes garbled (invalid UTF-8, broken event framing), a body that says it is gzip and
is not, a chunk of a few hundred kilobytes. What comes back is a 200 whose body, or event
stream, ends as its dialect ends one (a stream may end with its dialect's error event), or an
upstream error in the dialect's error shape; every request leaves its usage row, and nothing is
logged as an error. Also: answers that never end, and answers nested deeper than JSON can be
written. Seeded (``FUZZ_SEED``, ``FUZZ_ROUNDS``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.tenants.context import LEDGER_KEY
from gateway.upstream.calls import MAX_ANSWER_BYTES
from tests import fake_anthropic as fa
from tests import fake_gemini as fg
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.fuzzing import (
    CHUNKS,
    COMPLETION,
    NEVER_OPEN,
    ROUNDS,
    damaged,
    damaged_answer,
    fuzz_rng,
    garbled,
    no_errors_logged,
)

MODELS = ("small", "claude", "gem")
DIALECTS = ("chat", "messages", "responses")
UPSTREAM_FAILED = {"chat": {502}, "responses": {502}, "messages": {500}}
"""Every deployment failed, in each dialect (Anthropic's clients know 500 api_error, not 502)."""
NATIVE = {("chat", "small"), ("messages", "claude")}
"""A dialect asking a provider that speaks it: its answer passes through as the provider
wrote it, damage and all, so only its framing is the gateway's."""


def _openai_answers(rng: random.Random) -> web.Application:
    """An OpenAI-compatible upstream damaging its answers and stream chunks."""

    async def completions(request: web.Request) -> web.StreamResponse:
        garble = rng.random() < 0.25
        # Now and then a body that says it is gzip and is not, or is cut short.
        encoding = {"Content-Encoding": "gzip"} if rng.random() < 0.05 else {}
        if not (await request.json()).get("stream"):
            raw = json.dumps(damaged(COMPLETION, rng)).encode()
            if encoding and rng.random() < 0.5:
                raw = gzip.compress(raw)[: rng.randrange(10, 40)]
            return web.Response(body=garbled(raw, rng) if garble else raw,
                                content_type="application/json", headers=encoding)
        chunks = [damaged(c, rng) if rng.random() < 0.4 else c for c in CHUNKS]
        if rng.random() < 0.1:  # one big chunk: a few hundred kilobytes of content
            chunks.insert(1, {**CHUNKS[1], "choices": [
                {"index": 0, "delta": {"content": "word " * 60_000}, "finish_reason": None}]})
        data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        data += b"data: [DONE]\n\n"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **encoding})
        await response.prepare(request)
        await response.write(garbled(data, rng) if garble else data)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


async def _three_upstreams(aiohttp_server: Any, make_gateway: GatewayFactory,
                           openai: web.Application) -> tuple[TestClient, FakeAnthropic, FakeGemini]:
    anthropic, gemini = FakeAnthropic(), FakeGemini()
    servers = [await aiohttp_server(app) for app in
               (openai, fake_anthropic_app(anthropic), fake_gemini_app(gemini))]
    client = await make_gateway({
        "providers": [
            openai_provider("p1", str(servers[0].make_url("/v1"))),
            {"name": "a1", "kind": "anthropic", "base_url": str(servers[1].make_url("/v1")),
             "api_key_env": "FAKE_ANTHROPIC_KEY"},
            {"name": "g1", "kind": "gemini", "base_url": str(servers[2].make_url("/v1beta")),
             "api_key_env": "FAKE_GEMINI_KEY"}],
        "models": [model("small", "p1", upstream_model="up"),
                   model("claude", "a1", upstream_model="up"),
                   model("gem", "g1", upstream_model="up")],
        "failover": NEVER_OPEN, "cache": {"enabled": True},
    }, env={"FAKE_ANTHROPIC_KEY": "test-anthropic-key", "FAKE_GEMINI_KEY": "test-gemini-key"})
    return client, anthropic, gemini


def _request(dialect: str, model_name: str, stream: bool, i: int) -> tuple[str, dict[str, Any]]:
    prompt = f"What is 2 + {i % 7}?"  # asked again and again: answered from the cache too
    if dialect == "chat":
        return "/v1/chat/completions", {"model": model_name, "stream": stream,
                                        "messages": [{"role": "user", "content": prompt}]}
    if dialect == "messages":
        return "/v1/messages", {"model": model_name, "stream": stream, "max_tokens": 50,
                                "messages": [{"role": "user", "content": prompt}]}
    return "/v1/responses", {"model": model_name, "stream": stream, "input": prompt}


def _last_event(raw: bytes) -> tuple[str, Any]:
    """The name and data of a client event stream's last event."""
    block = [b for b in raw.split(b"\n\n") if b.strip()][-1]
    name, data = "", b""
    for line in block.split(b"\n"):
        field, _, value = line.partition(b": ")
        if field == b"event":
            name = value.decode()
        elif field == b"data":
            data = value
    return name, (data.decode() if data == b"[DONE]" else json.loads(data))


def _check_stream_end(dialect: str, raw: bytes) -> None:
    name, data = _last_event(raw)
    if dialect == "chat":
        assert data == "[DONE]" or set(data) == {"error"}, raw[-300:]
    elif dialect == "messages":
        assert name in ("message_stop", "error") and data["type"] == name, raw[-300:]
    else:
        assert name == data["type"] in ("response.completed", "response.incomplete",
                                        "response.failed", "error"), raw[-300:]


def _check_answer(dialect: str, model_name: str, stream: bool, status: int,
                  raw: bytes) -> None:
    """A 200 ending as its dialect ends an answer, or an upstream error in its shape."""
    if status != 200:
        assert status in UPSTREAM_FAILED[dialect], (status, raw[:300])
        body = json.loads(raw)
        assert body["error"]["message"].startswith("Every deployment failed"), body
        assert (body.get("type") == "error") is (dialect == "messages"), body
    elif stream:
        _check_stream_end(dialect, raw)
    elif (dialect, model_name) not in NATIVE:
        body = json.loads(raw)
        kind = {"chat": ("object", "chat.completion"), "messages": ("type", "message"),
                "responses": ("object", "response")}[dialect]
        assert body[kind[0]] == kind[1], raw[:300]
    else:
        assert isinstance(json.loads(raw), dict), raw[:300]


async def test_damaged_answers_reach_every_dialect_whole_or_as_a_clean_error(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rng = fuzz_rng(41)
    client, anthropic, gemini = await _three_upstreams(aiohttp_server, make_gateway,
                                                       _openai_answers(rng))
    valid_anthropic = [fa.text("Four."), fa.tool_use([("add", {"a": 1})], lead_text="Sure.")]
    valid_gemini = [fg.text("Four."), fg.function_calls([("add", {"a": 1})], lead_text="Sure.")]
    seen: set[tuple[str, bool, int]] = set()
    for i in range(ROUNDS):
        anthropic.script.append(damaged_answer(valid_anthropic[i % 2], rng))
        gemini.script.append(damaged_answer(valid_gemini[i % 2], rng))
        dialect, stream = DIALECTS[i // 3 % 3], i // 9 % 2 == 1
        path, body = _request(dialect, MODELS[i % 3], stream, i)
        response = await client.post(path, json=body)
        raw = await response.read()  # a stream is read to its end
        _check_answer(dialect, MODELS[i % 3], stream, response.status, raw)
        seen.add((dialect, stream, response.status))
    ledger = client.app[LEDGER_KEY]
    await ledger.flush()
    assert ledger.pending == 0 and ledger.written == ROUNDS
    no_errors_logged(caplog)
    # Each dialect, streamed and not, got whole answers; some damage was an upstream error.
    assert {(d, s) for d, s, status in seen if status == 200} == {
        (d, s) for d in DIALECTS for s in (False, True)}
    assert any(status != 200 for _, _, status in seen)


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_answers_nested_deeper_than_json_can_be_written_are_upstream_errors(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture,
    dialect: str, stream: bool,
) -> None:
    """orjson reads 1024 levels and writes 254: an answer 300 levels deep was read, then
    could not be written to the client (a 500, or a stream broken by an internal error)."""

    async def completions(request: web.Request) -> web.StreamResponse:
        if not stream:
            return web.json_response({**COMPLETION, "x_extra": _deep(300)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in ({**CHUNKS[0], "x_extra": _deep(300)}, *CHUNKS[1:]):
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", completions)
    client, _, _ = await _three_upstreams(aiohttp_server, make_gateway, upstream)
    path, body = _request(dialect, "small", stream, 0)
    response = await client.post(path, json=body)
    raw = await response.read()
    assert response.status in UPSTREAM_FAILED[dialect], raw[:300]
    assert "not JSON" in json.loads(raw)["error"]["message"]  # too deep to be read as JSON
    no_errors_logged(caplog)


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_that_never_end_are_upstream_errors_not_a_growing_buffer(
    aiohttp_server: Any, make_gateway: GatewayFactory, stream: bool,
) -> None:
    """An upstream that sends twice the limit and then holds its answer open for ever (a plain
    answer of whitespace; a stream whose first event never ends) is given up at the limit."""
    hold = asyncio.Event()

    async def completions(request: web.Request) -> web.StreamResponse:
        kind = "text/event-stream" if stream else "application/json"
        response = web.StreamResponse(headers={"Content-Type": kind})
        await response.prepare(request)
        await response.write(b"data: " if stream else b"{")
        piece = b" " * (1 << 20)
        try:
            for _ in range(2 * MAX_ANSWER_BYTES // len(piece)):
                await response.write(piece)
            await hold.wait()  # set when the test ends
        except ConnectionError:
            pass  # the gateway hung up: what it should do
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", completions)
    client, _, _ = await _three_upstreams(aiohttp_server, make_gateway, upstream)
    try:
        path, body = _request("chat", "small", stream, 0)
        response = await client.post(path, json=body)
        raw = await response.read()
        assert response.status == 502, raw[:300]
        assert "larger than" in json.loads(raw)["error"]["message"]
    finally:
        hold.set()
