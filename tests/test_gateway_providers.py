"""The Gemini and Anthropic adapters end to end, through the gateway's chat completions API.

A client speaks OpenAI to the gateway; the gateway speaks each provider's own wire format to
the in-process fakes (``tests/fake_gemini.py``, ``tests/fake_anthropic.py``). Tests that hold
for both wire formats are parametrised over a ``Wire``, which knows how to script its fake
and read what the fake was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from tests import fake_anthropic as fa
from tests import fake_gemini as fg
from tests.conftest import Config, GatewayFactory, model
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.test_chat_api import USER, sse_payloads

Json = dict[str, Any]
ENV = {"GEMINI_KEY": "test-gemini-key", "ANTHROPIC_KEY": "test-anthropic-key"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}}


@dataclass
class Wire:
    """One provider's fake, seen from a test: script answers, read what it received."""

    provider: str  # the provider's name in the gateway's configuration
    model: str  # a public model served by this provider alone
    group: str  # a public model served by this provider first, then by the other
    usage: Json  # what the fake's default usage becomes in OpenAI's shape

    def say(self, content: str, *, cut_after_words: int | None = None) -> None:
        """Script a text answer; a stream of it breaks after ``cut_after_words`` words."""
        raise NotImplementedError

    def call(self, name: str, args: Json) -> None:
        """Script an answer calling one function."""
        raise NotImplementedError

    def bodies(self) -> list[Json]:
        raise NotImplementedError

    def tool_result_sent(self) -> tuple[str, str]:
        """(function name or call id, result) of the tool result in the last request."""
        raise NotImplementedError


@dataclass
class GeminiWire(Wire):
    fake: FakeGemini

    def say(self, content: str, *, cut_after_words: int | None = None) -> None:
        self.fake.script.append(fg.text(content, cut_after=cut_after_words))

    def call(self, name: str, args: Json) -> None:
        self.fake.script.append(fg.function_calls([(name, args)]))

    def bodies(self) -> list[Json]:
        return [r.body for r in self.fake.requests]

    def tool_result_sent(self) -> tuple[str, str]:
        response = self.bodies()[-1]["contents"][-1]["parts"][0]["functionResponse"]
        return response["name"], response["response"]["output"]


@dataclass
class AnthropicWire(Wire):
    fake: FakeAnthropic

    def say(self, content: str, *, cut_after_words: int | None = None) -> None:
        # message_start, ping and content_block_start come before the first word.
        cut = None if cut_after_words is None else 3 + cut_after_words
        self.fake.script.append(fa.text(content, cut_after=cut))

    def call(self, name: str, args: Json) -> None:
        self.fake.script.append(fa.tool_use([(name, args)]))

    def bodies(self) -> list[Json]:
        return [r.body for r in self.fake.requests]

    def tool_result_sent(self) -> tuple[str, str]:
        result = self.bodies()[-1]["messages"][-1]["content"][0]
        return result["tool_use_id"], result["content"]


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    gemini: GeminiWire
    anthropic: AnthropicWire

    async def post(self, **body: Any) -> ClientResponse:
        body.setdefault("messages", USER)
        return await self.client.post("/v1/chat/completions", json=body)

    def sdk(self) -> openai.AsyncOpenAI:
        base_url = str(self.client.make_url("/v1"))
        return openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)


def _config(gemini_url: str, anthropic_url: str) -> Config:
    """``gemini`` and ``claude`` served by one provider each; two failover groups, tried
    cheapest first: ``gemini-first`` (then Anthropic) and ``claude-first`` (then Gemini)."""
    return {
        "providers": [
            {"name": "gem", "kind": "gemini", "base_url": gemini_url, "api_key_env": "GEMINI_KEY"},
            {"name": "ant", "kind": "anthropic", "base_url": anthropic_url,
             "api_key_env": "ANTHROPIC_KEY"},
        ],
        "models": [
            model("gemini", "gem", upstream_model="gemini-solo"),
            model("claude", "ant", upstream_model="claude-solo"),
            model("gemini-first", "gem", upstream_model="gemini-a", input_price_per_mtok=1.0),
            model("gemini-first", "ant", upstream_model="claude-a", input_price_per_mtok=2.0),
            model("claude-first", "ant", upstream_model="claude-b", input_price_per_mtok=1.0),
            model("claude-first", "gem", upstream_model="gemini-b", input_price_per_mtok=2.0),
        ],
        # One recorded failure opens a breaker: a deployment wrongly blamed shows at once.
        "failover": {"failure_threshold": 1, "cooldown_s": 60},
    }


@pytest.fixture
async def gateway(aiohttp_server: AiohttpServer, make_gateway: GatewayFactory) -> Gateway:
    gemini, anthropic = FakeGemini(), FakeAnthropic()
    gemini_server = await aiohttp_server(fake_gemini_app(gemini))
    anthropic_server = await aiohttp_server(fake_anthropic_app(anthropic))
    config = _config(str(gemini_server.make_url("/v1beta")),
                     str(anthropic_server.make_url("/v1")))
    client = await make_gateway(config, env=ENV)
    return Gateway(
        client,
        GeminiWire("gem", "gemini", "gemini-first",
                   {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}, gemini),
        AnthropicWire("ant", "claude", "claude-first",
                      {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
                      anthropic),
    )


@pytest.fixture(params=["gemini", "anthropic"])
def wire(request: pytest.FixtureRequest, gateway: Gateway) -> Wire:
    chosen: Wire = getattr(gateway, request.param)
    return chosen


async def events(resp: ClientResponse) -> tuple[list[Json], bool]:
    """The JSON events of an SSE answer, and whether it ended with ``[DONE]``."""
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(await resp.text())
    done = bool(payloads) and payloads[-1] == "[DONE]"
    return [json.loads(p) for p in (payloads[:-1] if done else payloads)], done


def text_of(chunks: list[Json]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# --- each wire format ----------------------------------------------------------------------


async def test_non_streaming_text_answer_in_openai_shape(gateway: Gateway, wire: Wire) -> None:
    wire.say("Bonjour tout le monde")
    resp = await gateway.post(model=wire.model)
    assert resp.status == 200
    assert resp.headers["x-gateway-provider"] == wire.provider
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "Bonjour tout le monde", "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == wire.usage


async def test_stream_is_openai_sse_ending_with_done(gateway: Gateway, wire: Wire) -> None:
    wire.say("one two three")
    chunks, done = await events(await gateway.post(model=wire.model, stream=True))
    assert done
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text_of(chunks) == "one two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks), "usage only when the client asks"


async def test_stream_options_include_usage_adds_the_usage_chunk(
    gateway: Gateway, wire: Wire
) -> None:
    resp = await gateway.post(model=wire.model, stream=True,
                              stream_options={"include_usage": True})
    chunks, done = await events(resp)
    assert done
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == wire.usage
    assert text_of(chunks) == "Hello from the fake."


async def test_tool_call_round_trip(gateway: Gateway, wire: Wire) -> None:
    wire.call("get_weather", {"city": "Paris"})
    first = await (await gateway.post(model=wire.model, tools=[WEATHER_TOOL])).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}

    wire.say("It is 21C in Paris.")
    history = [*USER, choice["message"],
               {"role": "tool", "tool_call_id": call["id"], "content": "21C"}]
    resp = await gateway.post(model=wire.model, tools=[WEATHER_TOOL], messages=history)
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "It is 21C in Paris."
    expected = "get_weather" if wire.provider == "gem" else call["id"]
    assert wire.tool_result_sent() == (expected, "21C")


async def test_stream_cut_after_content_ends_with_error_event_not_done(
    gateway: Gateway, wire: Wire
) -> None:
    wire.say("one two three four", cut_after_words=2)
    chunks, done = await events(await gateway.post(model=wire.group, stream=True))
    assert not done, "a broken stream must not end like a complete one"
    assert text_of(chunks[:-1]) == "one two"
    assert chunks[-1]["error"]["code"] == "stream_interrupted"
    assert chunks[-1]["error"]["type"] == "upstream_error"
    other = gateway.anthropic if wire is gateway.gemini else gateway.gemini
    assert other.bodies() == [], "after the first byte there is no failover"


# --- failover between wire formats ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_gemini_500_fails_over_to_anthropic(gateway: Gateway, stream: bool) -> None:
    gateway.gemini.fake.script.append(fg.failure(500, "Internal error.", "INTERNAL"))
    gateway.anthropic.say("Served by Claude.")
    resp = await gateway.post(model="gemini-first", stream=stream)
    assert resp.status == 200
    assert resp.headers["x-gateway-provider"] == "ant"
    assert resp.headers["x-gateway-attempts"] == "2"
    if stream:
        chunks, done = await events(resp)
        assert done and text_of(chunks) == "Served by Claude."
    else:
        assert (await resp.json())["choices"][0]["message"]["content"] == "Served by Claude."
    assert len(gateway.gemini.bodies()) == 1


async def test_anthropic_429_fails_over_to_gemini_and_rests(gateway: Gateway) -> None:
    gateway.anthropic.fake.script.append(
        fa.failure(429, "rate_limit_error", "Slow down.", headers={"retry-after": "30"})
    )
    first = await gateway.post(model="claude-first")
    assert first.status == 200
    assert (first.headers["x-gateway-provider"], first.headers["x-gateway-attempts"]) == (
        "gem", "2")
    second = await gateway.post(model="claude-first")
    assert (second.headers["x-gateway-provider"], second.headers["x-gateway-attempts"]) == (
        "gem", "1")
    assert len(gateway.anthropic.bodies()) == 1, "the rate-limited deployment rests"


# --- requests a provider cannot express ----------------------------------------------------


async def test_n_2_to_an_anthropic_only_model_is_400_unsupported(gateway: Gateway) -> None:
    resp = await gateway.post(model="claude", n=2)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "unsupported_by_provider"
    assert error["type"] == "invalid_request_error"
    assert "ant/claude-solo" in error["message"]
    assert gateway.anthropic.bodies() == []


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_n_2_to_anthropic_and_gemini_is_served_by_gemini(
    gateway: Gateway, stream: bool
) -> None:
    resp = await gateway.post(model="claude-first", n=2, stream=stream)
    assert resp.status == 200, await resp.text()
    assert resp.headers["x-gateway-provider"] == "gem"
    assert resp.headers["x-gateway-attempts"] == "2"
    assert gateway.gemini.bodies()[-1]["generationConfig"]["candidateCount"] == 2
    await resp.read()
    # Unsupported is not a failure of the deployment: its breaker (threshold 1) stays closed.
    again = await gateway.post(model="claude-first")
    assert (again.headers["x-gateway-provider"], again.headers["x-gateway-attempts"]) == (
        "ant", "1")


# --- the official openai SDK ---------------------------------------------------------------


async def test_openai_sdk_non_streaming(gateway: Gateway, wire: Wire) -> None:
    async with gateway.sdk() as sdk:
        reply = await sdk.chat.completions.create(
            model=wire.model, messages=[{"role": "user", "content": "Say hello"}]
        )
    assert reply.choices[0].message.content == "Hello from the fake."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == wire.usage["total_tokens"]


async def test_openai_sdk_streaming_with_usage(gateway: Gateway, wire: Wire) -> None:
    async with gateway.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model=wire.model, messages=[{"role": "user", "content": "Say hello"}],
            stream=True, stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the fake.")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == wire.usage["completion_tokens"]


async def test_openai_sdk_sees_unsupported_request_as_bad_request(gateway: Gateway) -> None:
    async with gateway.sdk() as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(
                model="claude", n=2, messages=[{"role": "user", "content": "Say hello"}]
            )
    assert caught.value.code == "unsupported_by_provider"


async def test_openai_sdk_sees_a_broken_gemini_stream_as_an_error(gateway: Gateway) -> None:
    gateway.gemini.say("one two three four", cut_after_words=2)
    async with gateway.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
        with pytest.raises(openai.APIError, match="stream broke"):
            async for _ in stream:
                pass

