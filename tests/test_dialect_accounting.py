"""Money on ``/v1/messages`` and ``/v1/responses`` (gateway/api/messages.py, responses.py,
gateway/pipeline/accounting.py): a client that leaves mid-stream, a cache hit, a tenant over
budget, prompt tokens read from and written to a provider's cache, and streams cut before their
usage (chat completions too), each through a real gateway, the fake providers and, where a
client is needed, the official ``anthropic`` and ``openai`` SDKs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from gateway.cache.context import CACHE
from gateway.core.answer import USAGE_SO_FAR
from gateway.core.appkeys import LIFECYCLE
from gateway.tenants.context import ADMISSION_KEY, LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import UsageRecord, recent
from gateway.tenants.quotas import Periods
from tests import fake_anthropic as fa
from tests import fake_gemini as fg
from tests.conftest import GatewayFactory, model, openai_provider
from tests.dialect_fixtures import ENV
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app
from tests.tenant_fixtures import GATEWAY_ENV, new_tenant_key
from tests.test_messages_passthrough import THINKING, thinking_answer

Json = dict[str, Any]
QUESTION = "What is the capital of France?"
PRICES = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}
CALL = {"id": "call_w1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo, Norway"}'}}
TOOLS = {"messages": [{"name": "get_weather", "description": "Weather now", "input_schema": {
             "type": "object", "properties": {"city": {"type": "string"}}}}],
         "responses": [{"type": "function", "name": "get_weather", "description": "Weather now",
                        "parameters": {"type": "object",
                                       "properties": {"city": {"type": "string"}}}}]}
# What the client has read once the answer is streaming: text, or a tool call's arguments.
STREAMING = {("messages", False): b"text_delta", ("responses", False): b"output_text.delta",
             ("messages", True): b"input_json_delta",
             ("responses", True): b"function_call_arguments.delta"}


def body(api: str, *, stream: bool = False, tools: bool = False) -> Json:
    """``QUESTION`` in ``api``'s dialect ("chat", "messages" or "responses") for model ``small``."""
    if api == "chat":
        out: Json = {"model": "small", "messages": [{"role": "user", "content": QUESTION}]}
    elif api == "messages":
        out = {"model": "small", "max_tokens": 64,
               "messages": [{"role": "user", "content": QUESTION}]}
    else:
        out = {"model": "small", "input": QUESTION, "max_output_tokens": 64}
    if tools:
        out["tools"] = TOOLS[api]
    return {**out, "stream": True} if stream else out


def path(api: str) -> str:
    return "/v1/chat/completions" if api == "chat" else f"/v1/{api}"


async def rows(client: TestClient) -> list[UsageRecord]:
    """The ledger's rows once every handler has ended (one whose client left ends later)."""
    app = client.server.app
    assert await app[LIFECYCLE].wait_idle(asyncio.get_running_loop().time() + 10), "a handler hangs"
    await app[LEDGER_KEY].flush()
    return await recent(app[STORE_KEY])


async def spent(client: TestClient) -> float:
    """What the anonymous tenant's daily budget has been charged."""
    admission = client.server.app[ADMISSION_KEY]
    day = Periods.of(time.time()).day
    [amount] = await admission.counters.get_spend("anonymous", [("t:anonymous:day", day)])
    return amount


async def leave_mid_stream(client: TestClient, api: str, sent: Json, seen: bytes) -> None:
    """Stream ``sent`` to ``api``'s path and leave once ``seen`` has arrived."""
    async with aiohttp.ClientSession() as session:
        resp = await session.post(client.make_url(path(api)), json=sent)
        assert resp.status == 200, await resp.text()
        got = b""
        while seen not in got:
            got += await resp.content.readany()
        resp.close()


@pytest.mark.parametrize("api", ["messages", "responses"])
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_call"])
async def test_a_client_leaving_mid_stream_is_charged_once_for_what_was_streamed(
    make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str], api: str, tools: bool
) -> None:
    fake, url = fake_openai
    client = await make_gateway({"providers": [openai_provider("p1", url)],
                                 "models": [model("small", "p1", **PRICES)]})
    # Three chunks go (the role, then two words or a tool call's name and half its
    # arguments), then the provider waits for a release that never comes.
    fake.script.append(Reply(kind="hang", chunks_before_cut=3, tool_call=CALL if tools else None))
    await leave_mid_stream(client, api, body(api, stream=True, tools=tools),
                           STREAMING[api, tools])
    await asyncio.wait_for(fake.disconnected.wait(), timeout=10)  # the upstream is closed
    [row] = await rows(client)
    assert (row.status, row.api, row.estimated) == (499, api, True)
    assert row.tokens_in > 0 and row.tokens_out > 0
    assert row.cost == pytest.approx((row.tokens_in * 1.0 + row.tokens_out * 2.0) / 1e6)
    assert await spent(client) == pytest.approx(row.cost)


@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_a_client_leaving_after_failover_pays_for_the_answering_stream_alone(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory,
    fake_openai: tuple[FakeOpenAI, str], api: str,
) -> None:
    first, first_url = fake_openai
    second = FakeOpenAI()
    second_url = str((await aiohttp_server(fake_openai_app(second))).make_url("/v1"))
    client = await make_gateway({
        "providers": [openai_provider("p1", first_url), openai_provider("p2", second_url)],
        "models": [model("small", "p1", **PRICES), model("small", "p2", **PRICES)]})
    first.script.append(Reply(kind="cut", chunks_before_cut=1))  # the role, then it breaks
    second.script.append(Reply(kind="hang", chunks_before_cut=3, text="Hello from second"))
    try:
        await leave_mid_stream(client, api, body(api, stream=True), b"from")
        await asyncio.wait_for(second.disconnected.wait(), timeout=10)
    finally:
        second.release.set()
    [row] = await rows(client)
    assert (row.status, row.attempts) == (499, 2)
    assert row.deployment == "p2/small"
    tokens = client.server.app[ADMISSION_KEY].tokens
    assert row.tokens_out == tokens.count("Hello from")  # the second's words, counted once
    assert await spent(client) == pytest.approx(row.cost)


async def _cached_gateway(make_gateway: GatewayFactory, url: str) -> TestClient:
    return await make_gateway({"providers": [openai_provider("p1", url)],
                               "models": [model("small", "p1", **PRICES)],
                               "cache": {"enabled": True}}, env=GATEWAY_ENV)


async def _miss_then_flush(client: TestClient) -> None:
    miss = await client.post("/v1/chat/completions", json={
        "model": "small", "max_tokens": 64,
        "messages": [{"role": "user", "content": QUESTION}]})
    assert miss.headers["x-gateway-cache"] == "miss", await miss.text()
    await client.server.app[CACHE].flush()  # type: ignore[union-attr]  # written in batches


async def _hit(client: TestClient, api: str, stream: bool) -> Json:
    """Ask ``QUESTION`` in ``api``'s dialect through its SDK; the usage the client was told."""
    base = str(client.make_url("/"))
    if api == "messages":
        async with anthropic.AsyncAnthropic(base_url=base, api_key="k", max_retries=0) as ant:
            sent: Any = body(api)
            if stream:
                async with ant.messages.stream(**sent) as events:
                    message = await events.get_final_message()
            else:
                message = await ant.messages.create(**sent)
        return message.usage.model_dump()
    async with openai.AsyncOpenAI(base_url=base + "v1/", api_key="k", max_retries=0) as oai:
        if stream:
            async with oai.responses.stream(**body(api)) as events:
                response = await events.get_final_response()
        else:
            response = await oai.responses.create(**body(api))
    return response.usage.model_dump() if response.usage is not None else {}


@pytest.mark.parametrize("api", ["messages", "responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_cache_hit_costs_nothing_says_what_it_saved_and_spends_no_budget(
    make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str], api: str, stream: bool
) -> None:
    fake, url = fake_openai
    client = await _cached_gateway(make_gateway, url)
    await _miss_then_flush(client)
    usage = await _hit(client, api, stream)
    assert len(fake.requests) == 1
    told = (usage["input_tokens"], usage["output_tokens"])
    assert told == (0, 0)
    miss, hit = sorted(await rows(client), key=lambda r: r.cache != "miss")
    assert (hit.cache, hit.api, hit.status) == ("hit", api, 200)
    assert (hit.tokens_in, hit.tokens_out, hit.cost) == (0, 0, 0.0)
    assert hit.saved_cost == pytest.approx(miss.cost) and miss.cost > 0
    assert await spent(client) == pytest.approx(miss.cost)


@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_a_tenant_over_budget_is_refused_in_its_dialect_before_any_upstream_call(
    make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str], api: str
) -> None:
    fake, url = fake_openai
    client = await make_gateway({"providers": [openai_provider("p1", url)],
                                 "models": [model("small", "p1", input_price_per_mtok=1e6)],
                                 "tenants": {"bootstrap": False, "tokenizer": ""}},
                                env=GATEWAY_ENV)
    key = await new_tenant_key(client, "acme", limits={"daily_budget_usd": 1.0})
    base = str(client.make_url("/"))
    first = await client.post(f"/v1/{api}", json=body(api), headers={"x-api-key": key})
    assert first.status == 200, await first.text()  # 11 prompt tokens at $1 each: over
    asked = len(fake.requests)
    if api == "messages":
        async with anthropic.AsyncAnthropic(base_url=base, api_key=key, max_retries=0) as ant:
            with pytest.raises(anthropic.RateLimitError) as refused:
                await ant.messages.create(**body(api))
        error = refused.value.body
        assert isinstance(error, dict) and error.keys() == {"type", "error"}
        assert error["type"] == "error" and error["error"].keys() == {"type", "message"}
        assert error["error"]["type"] == "rate_limit_error"
    else:
        async with openai.AsyncOpenAI(base_url=base + "v1/", api_key=key, max_retries=0) as oai:
            with pytest.raises(openai.RateLimitError) as refused:  # type: ignore[assignment]
                await oai.responses.create(**body(api))
        assert refused.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert "budget" in refused.value.message
    assert int(refused.value.response.headers["retry-after"]) > 0
    assert len(fake.requests) == asked


async def _claude_gateway(aiohttp_server: AiohttpServer, make_gateway: GatewayFactory,
                          **prices: float) -> tuple[FakeAnthropic, TestClient]:
    """Model ``small`` on a fake Anthropic at ``prices``: the fake and the gateway's client."""
    fake = FakeAnthropic()
    server = await aiohttp_server(fake_anthropic_app(fake))
    return fake, await make_gateway({
        "providers": [{"name": "ant", "kind": "anthropic", "base_url": str(server.make_url("/v1")),
                       "api_key_env": "ANTHROPIC_KEY"}],
        "models": [model("small", "ant", upstream_model="claude-up", **prices)]}, env=ENV)


# 100 fresh input tokens, 1000 read from the provider's cache, 50 written to it, 10 out.
CACHED_USE = fa.usage(inputs=100, outputs=10, cache_read=1000, cache_write=50)
# 100 fresh input tokens, 1000 read from the provider's cache, 250 written to it (50 for five
# minutes, 200 for an hour: cache_control's "ttl": "1h"), 10 out.
HOUR_USE = fa.usage(inputs=100, outputs=10, cache_read=1000, cache_write=250, cache_write_1h=200)

# Anthropic's prices for Claude Sonnet: cache reads at a tenth of the input price, 5-minute
# cache writes at a quarter above it; the 1-hour price is left to its default, twice the input
# price, as Anthropic bills it.
SONNET = {"input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0,
          "cached_input_price_per_mtok": 0.3, "cache_write_price_per_mtok": 3.75}
SONNET_OUTPUT = 15.0 / 1e6
# What the prompts of CACHED_USE and HOUR_USE cost at SONNET's prices: each token class once,
# at its own price.
CACHED_PROMPT_COST = (100 * 3.0 + 1000 * 0.3 + 50 * 3.75) / 1e6
HOUR_PROMPT_COST = (100 * 3.0 + 1000 * 0.3 + 50 * 3.75 + 200 * 6.0) / 1e6
# Writes for five minutes only, and some for an hour, priced above five-minute ones.
LIFETIMES = pytest.mark.parametrize(("use", "tokens_in", "prompt_cost"), [
    (CACHED_USE, 1150, CACHED_PROMPT_COST), (HOUR_USE, 1350, HOUR_PROMPT_COST)],
    ids=["5m", "1h"])


@LIFETIMES
@pytest.mark.parametrize("api", ["messages", "responses", "chat"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_anthropic_cache_reads_and_writes_are_priced_once_each_at_their_lifetimes_price(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, api: str, stream: bool,
    use: Json, tokens_in: int, prompt_cost: float,
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, **SONNET)
    fake.script.append(fa.text("Paris.", use=use))
    resp = await client.post(path(api), json=body(api, stream=stream))
    assert resp.status == 200, await resp.text()
    await resp.read()
    [row] = await rows(client)
    assert (row.tokens_in, row.tokens_out, row.estimated) == (tokens_in, 10, False)
    assert row.cost == pytest.approx(prompt_cost + 10 * SONNET_OUTPUT)
    assert await spent(client) == pytest.approx(row.cost)


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_streams_hour_long_writes_told_at_its_start_outlast_message_deltas_totals(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, api: str
) -> None:
    """Anthropic's newer streams repeat every running total in message_delta, but not the
    split of cache writes by lifetime, which only message_start told."""
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, **SONNET)
    fake.script.append(fa.text("Paris.", use=HOUR_USE, delta_totals=True))
    resp = await client.post(path(api), json=body(api, stream=True))
    assert resp.status == 200, await resp.text()
    await resp.read()
    [row] = await rows(client)
    assert (row.tokens_in, row.tokens_out, row.estimated) == (1350, 10, False)
    assert row.cost == pytest.approx(HOUR_PROMPT_COST + 10 * SONNET_OUTPUT)


async def test_the_split_of_cache_writes_by_lifetime_reaches_every_dialects_client(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, **SONNET)
    fake.script.extend([fa.text("Paris.", use=HOUR_USE), fa.text("Paris.", use=HOUR_USE)])
    chat = await (await client.post(path("chat"), json=body("chat"))).json()
    assert chat["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1000, "cache_write_tokens": 250, "cache_creation_token_details": {
            "ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 200}}
    response = await (await client.post("/v1/responses", json=body("responses"))).json()
    assert response["usage"]["input_tokens_details"]["cache_write_tokens"] == 250


async def test_cached_tokens_of_a_model_without_a_cached_price_are_priced_as_input(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, input_price_per_mtok=3.0,
                                         output_price_per_mtok=15.0)
    fake.script.append(fa.text("Paris.", use=CACHED_USE))
    resp = await client.post("/v1/messages", json=body("messages"))
    assert (await resp.json())["usage"]["cache_read_input_tokens"] == 1000
    [row] = await rows(client)
    assert row.cost == pytest.approx((1150 * 3.0 + 10 * 15.0) / 1e6)  # never free


async def test_responses_usage_counts_cached_tokens_inside_input_tokens_once(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway)
    fake.script.append(fa.text("Paris.", use=CACHED_USE))
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1/")), api_key="k",
                                  max_retries=0) as oai:
        response = await oai.responses.create(**body("responses"))
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens,
            response.usage.output_tokens, response.usage.total_tokens) == (1150, 1000, 10, 1160)
    [row] = await rows(client)
    assert (row.tokens_in, row.tokens_out) == (1150, 10)


async def test_thinking_streamed_before_an_upstream_break_is_charged_as_output(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, **PRICES)
    answer = thinking_answer()
    (kind, start), *rest = answer.events
    # Anthropic's message_start counts one token out, whatever is to come.
    start = {**start, "message": {**start["message"], "usage": fa.usage(outputs=1)}}
    stop_at = next(i for i, (kind, _) in enumerate(answer.events) if kind == "content_block_stop")
    fake.script.append(fa.Answer(answer.body, [(kind, start), *rest], end_after=stop_at))
    resp = await client.post("/v1/messages", json={
        **body("messages", stream=True), "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert b"thinking_delta" in await resp.read()
    [row] = await rows(client)
    assert (row.status, row.estimated) == (502, True)
    tokens = client.server.app[ADMISSION_KEY].tokens
    assert row.tokens_out == tokens.count(THINKING[0]["thinking"]) > 1
    assert row.cost == pytest.approx((row.tokens_in * 1.0 + row.tokens_out * 2.0) / 1e6)


@LIFETIMES
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_stream_cut_before_its_usage_charges_the_prompt_anthropic_counted_at_its_start(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, api: str, use: Json,
    tokens_in: int, prompt_cost: float,
) -> None:
    fake, client = await _claude_gateway(aiohttp_server, make_gateway, **SONNET)
    # message_start (with the prompt's counts, split by lifetime where some writes are for an
    # hour), ping, the text block's start and two words; then the body ends, without
    # message_delta's final usage.
    fake.script.append(fa.text("Paris is the capital", use=use, end_after=5))
    resp = await client.post(path(api), json=body(api, stream=True))
    assert b" is" in await resp.read()
    [row] = await rows(client)
    assert (row.status, row.estimated, row.tokens_in) == (502, True, tokens_in)
    assert row.tokens_out == client.server.app[ADMISSION_KEY].tokens.count("Paris is")
    assert row.cost == pytest.approx(prompt_cost + row.tokens_out * SONNET_OUTPUT)


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_chat_client_never_sees_the_usage_anthropic_told_at_the_start(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, include_usage: bool
) -> None:
    _, client = await _claude_gateway(aiohttp_server, make_gateway, **PRICES)
    resp = await client.post(path("chat"), json={
        **body("chat", stream=True), "stream_options": {"include_usage": include_usage}})
    streamed = await resp.read()
    assert b"Hello" in streamed and USAGE_SO_FAR.encode() not in streamed
    assert (b'"prompt_tokens":9' in streamed) is include_usage


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_gemini_stream_cut_before_its_end_charges_what_gemini_counted_so_far(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, api: str
) -> None:
    fake = FakeGemini()
    server = await aiohttp_server(fake_gemini_app(fake))
    client = await make_gateway({
        "providers": [{"name": "gem", "kind": "gemini", "base_url": str(server.make_url("/v1beta")),
                       "api_key_env": "GEMINI_KEY"}],
        "models": [model("small", "gem", upstream_model="gemini-up", input_price_per_mtok=3.0,
                         output_price_per_mtok=15.0, cached_input_price_per_mtok=0.3)]}, env=ENV)
    # Each event counts the prompt (1000 of its 1200 tokens read from Gemini's cache) and the
    # thinking done before the answer (40 tokens, never streamed); two words go, then the body
    # ends without the last event and its finish reason.
    meta = fg.usage(prompt=1200, candidates=3, cachedContentTokenCount=1000,
                    thoughtsTokenCount=40)
    fake.script.append(fg.text("Paris is the capital", meta=meta, end_after=2))
    resp = await client.post(path(api), json=body(api, stream=True))
    streamed = await resp.read()
    assert b" is" in streamed and USAGE_SO_FAR.encode() not in streamed
    [row] = await rows(client)
    assert (row.status, row.estimated, row.tokens_in) == (502, True, 1200)
    assert row.tokens_out == 2 + 40  # Gemini's count: more than the two words streamed
    assert row.cost == pytest.approx((200 * 3.0 + 1000 * 0.3 + 42 * 15.0) / 1e6)


def _running_usage_app(words: list[str]) -> web.Application:
    """An OpenAI-compatible server whose first chunk says the usage so far (the prompt, no
    output yet), then streams ``words`` and breaks off before its finish and its final usage."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}],
                 "usage": {"prompt_tokens": 11, "completion_tokens": 0, "total_tokens": 11}}
        await resp.write(b"data: " + json.dumps(first).encode() + b"\n\n")
        for word in words:
            part = {**head, "choices": [{"index": 0, "delta": {"content": word},
                                         "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(part).encode() + b"\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_stream_cut_after_a_running_usage_is_charged_for_the_output_it_streamed(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory, api: str
) -> None:
    words = ["Paris ", "is ", "the ", "capital ", "of ", "France"]
    server = await aiohttp_server(_running_usage_app(words))
    client = await make_gateway({"providers": [openai_provider("p1", str(server.make_url("/v1")))],
                                 "models": [model("small", "p1", **PRICES)]})
    resp = await client.post(path(api), json=body(api, stream=True))
    assert b"France" in await resp.read()
    [row] = await rows(client)
    # The usage on the first chunk counted the output so far (none): the output streamed after
    # it is still output, and the row says it is the gateway's count.
    assert (row.status, row.estimated, row.tokens_in) == (502, True, 11)
    assert row.tokens_out == client.server.app[ADMISSION_KEY].tokens.count("".join(words)) > 0
    assert row.cost == pytest.approx((11 * 1.0 + row.tokens_out * 2.0) / 1e6)
    assert await spent(client) == pytest.approx(row.cost)
