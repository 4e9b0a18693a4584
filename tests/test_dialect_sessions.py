"""Agent sessions replayed through the gateway in their own dialects (a Claude Code-style
Messages session, a Codex-style Responses session), and what every dialect shares: the cache
keyed by meaning, keys and rate-limit headers, the ledger's and access log's ``api``."""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient

from gateway.cache.context import CACHE
from gateway.observability.access_log import ACCESS_LOGGER
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from tests.conftest import GatewayFactory
from tests.dialect_fixtures import ENV, Upstreams, three_upstreams_config
from tests.fake_openai import FakeOpenAI
from tests.tenant_fixtures import GATEWAY_ENV, new_tenant_key

Json = dict[str, Any]
# Claude Code sends a long system prompt as blocks, the first cached, and a dozen tools.
CLAUDE_SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": "You are an interactive CLI tool that helps users with software "
     "engineering tasks. " * 40, "cache_control": {"type": "ephemeral"}},
]
CLAUDE_TOOLS = [
    {"name": name, "description": f"The {name} tool.", "input_schema": {
        "type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}}
    for name, arg in (("Bash", "command"), ("Read", "file_path"), ("Edit", "file_path"),
                      ("Glob", "pattern"), ("Grep", "pattern"))
]
CODEX_TOOLS = [{"type": "function", "name": "shell", "description": "Runs a shell command",
                "strict": False, "parameters": {
                    "type": "object", "properties": {"command": {"type": "array",
                                                                 "items": {"type": "string"}}},
                    "required": ["command"], "additionalProperties": False}}]


@pytest.mark.parametrize("model_name", ["gpt", "claude"])
async def test_claude_code_style_session_streams_tool_use_and_results(
    upstreams: Upstreams, model_name: str
) -> None:
    upstreams.call(model_name, "Bash", {"command": "git status"})
    upstreams.say(model_name, "The tree is clean.")
    history: list[Json] = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>context</system-reminder>"},
        {"type": "text", "text": "Is my git tree clean?"}]}]
    async with anthropic.AsyncAnthropic(base_url=upstreams.url(), api_key="sk-ant-x",
                                        max_retries=0) as client:
        for _ in range(2):
            async with client.messages.stream(
                model=model_name, max_tokens=32000, system=CLAUDE_SYSTEM, tools=CLAUDE_TOOLS,  # type: ignore[arg-type]
                messages=history, metadata={"user_id": "user_abc_session_1"},  # type: ignore[arg-type]
            ) as stream:
                reply = await stream.get_final_message()
            blocks = [b.model_dump() for b in reply.content]
            history.append({"role": "assistant", "content": blocks})
            calls = [b for b in reply.content if b.type == "tool_use"]
            if not calls:
                break
            history.append({"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": calls[0].id,  # type: ignore[union-attr]
                "content": [{"type": "text", "text": "nothing to commit, working tree clean"}]}]})
    assert reply.content[0].text == "The tree is clean."  # type: ignore[union-attr]
    last = upstreams.last_body(model_name)
    if model_name == "claude":  # passed through: the very body the client sent
        assert last["system"] == CLAUDE_SYSTEM and last["tools"] == CLAUDE_TOOLS
        assert last["metadata"] == {"user_id": "user_abc_session_1"}
        return
    assert last["messages"][0]["role"] == "system"
    assert last["messages"][0]["content"].startswith("You are Claude Code")
    assert [t["function"]["name"] for t in last["tools"]] == [t["name"] for t in CLAUDE_TOOLS]
    assert last["messages"][-2]["tool_calls"][0]["function"]["name"] == "Bash"
    assert last["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1",
                                    "content": "nothing to commit, working tree clean"}
    assert last["user"] == "user_abc_session_1"


@pytest.mark.parametrize("model_name", ["gpt", "gemini", "claude"])
async def test_codex_style_session_continues_by_previous_response_id(
    upstreams: Upstreams, model_name: str
) -> None:
    upstreams.call(model_name, "shell", {"command": ["ls"]})
    upstreams.call(model_name, "shell", {"command": ["cat", "README.md"]})
    upstreams.say(model_name, "It is a gateway.")
    async with openai.AsyncOpenAI(base_url=upstreams.url("/v1"), api_key="k",
                                  max_retries=0) as client:
        previous, turn_input = None, [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this repository?"}]}]
        for _ in range(3):
            async with client.responses.stream(
                model=model_name, instructions="You are Codex.", input=turn_input,  # type: ignore[arg-type]
                tools=CODEX_TOOLS, tool_choice="auto", parallel_tool_calls=False,  # type: ignore[arg-type]
                previous_response_id=previous, reasoning={"effort": "medium"},
            ) as stream:
                final = await stream.get_final_response()
            previous = final.id
            calls = [i for i in final.output if i.type == "function_call"]
            if not calls:
                break
            turn_input = [{"type": "function_call_output", "call_id": calls[0].call_id,  # type: ignore[union-attr]
                           "output": f"output of {json.loads(calls[0].arguments)['command']}"}]  # type: ignore[union-attr]
    assert final.output_text == "It is a gateway."
    sent = json.dumps(upstreams.last_body(model_name))
    for piece in ("What is this repository?", "output of ['ls']",
                  "output of ['cat', 'README.md']", "You are Codex."):
        assert piece in sent


async def test_same_question_in_two_dialects_shares_one_cached_answer(
    aiohttp_server: Any, make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    fake, url = fake_openai
    config = three_upstreams_config(url, url, url)
    config["models"] = config["models"][:1]
    config["providers"] = config["providers"][:1]
    client: TestClient = await make_gateway({**config, "cache": {"enabled": True}}, env=ENV)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    chat = await client.post("/v1/chat/completions",
                             json={"model": "gpt", "messages": question, "max_tokens": 64})
    assert chat.headers["x-gateway-cache"] == "miss"
    await client.server.app[CACHE].flush()  # type: ignore[union-attr]  # written in batches
    messages = await client.post("/v1/messages",
                                 json={"model": "gpt", "messages": question, "max_tokens": 64})
    responses = await client.post("/v1/responses", json={
        "model": "gpt", "input": question[0]["content"], "max_output_tokens": 64})
    assert messages.headers["x-gateway-cache"] == responses.headers["x-gateway-cache"] == "hit"
    assert len(fake.requests) == 1
    assert (await messages.json())["content"][0]["text"] == "Hello from the fake provider."
    assert (await responses.json())["output"][0]["content"][0]["text"] == \
        "Hello from the fake provider."


async def test_keys_limits_ledger_and_access_log_say_which_api(
    make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = fake_openai
    config = three_upstreams_config(url, url, url)
    config["models"], config["providers"] = config["models"][:1], config["providers"][:1]
    client: TestClient = await make_gateway(
        {**config, "tenants": {"bootstrap": False, "tokenizer": ""}}, env=GATEWAY_ENV)
    key = await new_tenant_key(client, "acme", limits={"requests_per_minute": 3})
    base = str(client.make_url("/"))
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        async with anthropic.AsyncAnthropic(base_url=base, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(anthropic.AuthenticationError):
                await bad.messages.create(model="gpt", max_tokens=8, messages=[  # type: ignore[arg-type]
                    {"role": "user", "content": "hi"}])
        async with anthropic.AsyncAnthropic(base_url=base, api_key=key, max_retries=0) as ant:
            raw = await ant.messages.with_raw_response.create(
                model="gpt", max_tokens=8, messages=[{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == "2"
        async with openai.AsyncOpenAI(base_url=base + "v1/", api_key=key, max_retries=0) as oai:
            await oai.responses.create(model="gpt", input="hi")
            await oai.chat.completions.create(model="gpt", messages=[  # type: ignore[arg-type]
                {"role": "user", "content": "hi"}])
            with pytest.raises(openai.RateLimitError):
                await oai.responses.create(model="gpt", input="hi again")
        await client.server.app[LEDGER_KEY].flush()  # type: ignore[union-attr]
    rows = await recent(client.server.app[STORE_KEY], tenant="acme")  # type: ignore[union-attr]
    assert sorted(r.api for r in rows) == ["chat", "messages", "responses"]  # 429s: no row
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert {(line["api"], line["path"]) for line in lines} >= {
        ("messages", "/v1/messages"), ("responses", "/v1/responses"),
        ("chat", "/v1/chat/completions")}
    assert not any(key in r.getMessage() for r in caplog.records)
    assert fake.requests and all(r["model"] == "gpt-up" for r in fake.requests)



async def test_auto_routes_requests_of_both_dialects(upstreams: Upstreams) -> None:
    question = "Write a haiku about the sea."
    messages = await upstreams.client.post("/v1/messages", json={
        "model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": question}]})
    responses = await upstreams.client.post("/v1/responses",
                                            json={"model": "auto", "input": question})
    for resp in (messages, responses):
        assert resp.status == 200, await resp.text()
        assert resp.headers["x-gateway-tier"] == "cheap"
        assert "x-gateway-route-reason" in resp.headers
