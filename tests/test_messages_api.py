"""``/v1/messages`` through the official ``anthropic`` SDK, against a fake upstream of each wire
format: translated for the OpenAI-compatible and Gemini fakes, passed through to the Anthropic
fake with nothing lost."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import anthropic
import orjson
import pytest

from tests import fake_anthropic as fa
from tests.dialect_fixtures import Upstreams

Json = dict[str, Any]
USER = [{"role": "user", "content": "Say hello"}]
WEATHER = {"name": "get_weather", "description": "Weather now",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def sdk(up: Upstreams) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=up.url(), api_key="unused", max_retries=0)


def sync_sdk(up: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=up.url(), api_key="unused", max_retries=0)


async def test_async_sdk_gets_a_text_message_from_every_upstream(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.say(upstream_model, "Hello there friend")
    async with sdk(upstreams) as client:
        reply = await client.messages.create(model=upstream_model, max_tokens=64, messages=USER)
    assert reply.type == "message" and reply.role == "assistant"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "Hello there friend"  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


async def test_async_sdk_stream_accumulates_the_same_message_from_every_upstream(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.say(upstream_model, "one two three four")
    async with sdk(upstreams) as client, client.messages.stream(
        model=upstream_model, max_tokens=64, messages=USER,  # type: ignore[arg-type]
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds.index("message_delta") > kinds.index("content_block_stop")
    assert final.content[0].text == "one two three four"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


async def test_sync_sdk_plain_and_streamed(upstreams: Upstreams) -> None:
    upstreams.say("gpt", "plain answer")
    upstreams.say("gpt", "streamed answer")

    def both() -> tuple[str, str]:
        with sync_sdk(upstreams) as client:
            plain = client.messages.create(model="gpt", max_tokens=32, messages=USER)  # type: ignore[arg-type]
            with client.messages.stream(model="gpt", max_tokens=32, messages=USER) as s:  # type: ignore[arg-type]
                streamed = s.get_final_text()
        return plain.content[0].text, streamed  # type: ignore[union-attr]

    # The SDK's sync client blocks its thread; the gateway runs on this test's event loop.
    assert await asyncio.to_thread(both) == ("plain answer", "streamed answer")


async def test_tool_round_trip_reaches_every_upstream_in_its_own_format(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.call(upstream_model, "get_weather", {"city": "Oslo"})
    upstreams.say(upstream_model, "It is sunny in Oslo")
    async with sdk(upstreams) as client:
        first = await client.messages.create(
            model=upstream_model, max_tokens=64, messages=USER, tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "auto"},
        )
        assert first.stop_reason == "tool_use"
        call = next(b for b in first.content if b.type == "tool_use")
        assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})  # type: ignore[union-attr]
        history = [*USER, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,  # type: ignore[union-attr]
                                                 "content": "sunny, 21 C"}]}]
        second = await client.messages.create(
            model=upstream_model, max_tokens=64, messages=history, tools=[WEATHER],  # type: ignore[arg-type, list-item]
        )
    assert second.content[0].text == "It is sunny in Oslo"  # type: ignore[union-attr]
    assert "sunny, 21 C" in orjson.dumps(upstreams.last_body(upstream_model)).decode()


async def test_streamed_tool_call_arrives_as_input_json_deltas(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.call(upstream_model, "get_weather", {"city": "Lima"})
    async with sdk(upstreams) as client, client.messages.stream(
        model=upstream_model, max_tokens=64, messages=USER, tools=[WEATHER],  # type: ignore[arg-type, list-item]
    ) as stream:
        deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]  # type: ignore[union-attr]
        final = await stream.get_final_message()
    assert "input_json_delta" in deltas
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.input == {"city": "Lima"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


async def test_stop_sequences_reach_each_upstream_in_its_own_field(
    upstreams: Upstreams, upstream_model: str
) -> None:
    async with sdk(upstreams) as client:
        await client.messages.create(model=upstream_model, max_tokens=32, messages=USER,  # type: ignore[arg-type]
                                     stop_sequences=["END", "STOP"])
    body = upstreams.last_body(upstream_model)
    sent = {"gpt": lambda: body["stop"],
            "gemini": lambda: body["generationConfig"]["stopSequences"],
            "claude": lambda: body["stop_sequences"]}[upstream_model]()
    assert sent == ["END", "STOP"]


async def test_anthropic_stop_sequence_reason_comes_back(upstreams: Upstreams) -> None:
    upstreams.anthropic.script.append(fa.text("counting one two", stop_reason="stop_sequence"))
    async with sdk(upstreams) as client:
        reply = await client.messages.create(model="claude", max_tokens=32, messages=USER,  # type: ignore[arg-type]
                                             stop_sequences=["three"])
    assert reply.stop_reason == "stop_sequence"


async def test_json_output_format_becomes_the_upstream_response_format(
    upstreams: Upstreams,
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    upstreams.say("gpt", '{"city": "Oslo"}')
    async with sdk(upstreams) as client:
        reply = await client.messages.create(
            model="gpt", max_tokens=32, messages=USER,  # type: ignore[arg-type]
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert orjson.loads(reply.content[0].text) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert upstreams.openai.requests[-1]["response_format"]["json_schema"]["schema"] == schema


async def test_errors_come_in_anthropics_shape_and_sdk_classes(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(model="nope", max_tokens=8, messages=USER)  # type: ignore[arg-type]
        search = {"type": "web_search_20250305", "name": "web_search"}
        with pytest.raises(anthropic.BadRequestError) as server_tool:
            await client.messages.create(model="gpt", max_tokens=8, messages=USER,  # type: ignore[arg-type]
                                         tools=[search])  # type: ignore[list-item]
    assert missing.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
        "type": "not_found_error", "message": missing.value.body["error"]["message"]}}  # type: ignore[index]
    assert "tools[0].type" in server_tool.value.message
    raw = await upstreams.client.post("/v1/messages", json={"model": "gpt", "messages": USER})
    assert raw.status == 400
    assert (await raw.json())["error"] == {
        "type": "invalid_request_error",
        "message": "Invalid value for 'max_tokens': expected an integer of 1 or more, got null."}


async def test_upstream_failures_become_anthropics_api_and_rate_limit_errors(
    upstreams: Upstreams,
) -> None:
    upstreams.anthropic.script.append(fa.failure(529, "overloaded_error", "Overloaded"))
    upstreams.anthropic.script.append(fa.failure(429, "rate_limit_error", "Slow down"))
    async with sdk(upstreams) as client:
        with pytest.raises(anthropic.InternalServerError) as failed:
            await client.messages.create(model="claude", max_tokens=8, messages=USER)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="claude", max_tokens=8, messages=USER)  # type: ignore[arg-type]
    # Every deployment failing is the gateway's 502, Anthropic's 500 api_error; every
    # deployment rate limited is a 429 with Retry-After, Anthropic's rate_limit_error.
    assert (failed.value.status_code, failed.value.body["error"]["type"]) == (500, "api_error")  # type: ignore[index]
    assert (limited.value.status_code, limited.value.body["error"]["type"]) == (  # type: ignore[index]
        429, "rate_limit_error")
    assert int(limited.value.response.headers["retry-after"]) > 0


async def test_count_tokens_grows_with_the_prompt(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        short = await client.messages.count_tokens(model="gpt", messages=USER)  # type: ignore[arg-type]
        long = await client.messages.count_tokens(
            model="gpt", messages=[{"role": "user", "content": "Say hello " * 50}],
            system="You are a helpful assistant.", tools=[WEATHER])  # type: ignore[list-item]
    assert 0 < short.input_tokens < long.input_tokens
    assert not upstreams.openai.requests, "counting never calls an upstream"


async def test_gemini_thought_signature_survives_a_tool_round_trip(upstreams: Upstreams) -> None:
    from tests import fake_gemini as fg

    upstreams.gemini.script.append(fg.function_calls([("get_weather", {"city": "Oslo"})],
                                                     signature="c2lnbmVkLzE+Kw=="))
    async with sdk(upstreams) as client:
        first = await client.messages.create(model="gemini", max_tokens=64, messages=USER,  # type: ignore[arg-type]
                                             tools=[WEATHER])  # type: ignore[list-item]
        call = next(b for b in first.content if b.type == "tool_use")
        await client.messages.create(model="gemini", max_tokens=64, tools=[WEATHER], messages=[  # type: ignore[list-item]
            *USER, {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[list-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,  # type: ignore[union-attr]
                                          "content": "cold"}]}])
    parts = [p for c in upstreams.last_body("gemini")["contents"] for p in c["parts"]]
    sent = next(p for p in parts if "functionCall" in p)
    assert sent["thoughtSignature"] == "c2lnbmVkLzE+Kw=="
    assert any("functionResponse" in p for p in parts)


# --- what Anthropic refuses, refused by the gateway before any upstream --------------------

ASKED = [*USER, {"role": "assistant", "content": [
    {"type": "text", "text": "Checking."},
    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]}]
SEARCH = {"type": "web_search_20250305", "name": "web_search"}  # makes the body native-only
LARGE_BYTES = bytes(range(256)) * 400  # 136,536 characters encoded: past WHOLE_CHECK_CHARS
LARGE = base64.b64encode(LARGE_BYTES).decode()
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5E"
       "rkJggg==")  # a 1x1 PNG


def answer(call_id: str, *rest: Json) -> Json:
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call_id, "content": "sunny"}, *rest]}


def image(media_type: str, data: str) -> Json:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def no_upstream_called(up: Upstreams) -> bool:
    return not (up.openai.requests or up.gemini.requests or up.anthropic.requests)


async def refused(up: Upstreams, **body: Any) -> str:
    """The message of the 400 the SDK gets for ``body``, in Anthropic's error shape."""
    body = {"max_tokens": 32, "messages": USER, **body}
    async with sdk(up) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(**body)
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    message: str = error["error"]["message"]
    return message


@pytest.mark.parametrize(("messages", "tools", "path"), [
    ([*ASKED, answer("toolu_2")], [WEATHER], "messages.2.content.0.tool_use_id"),
    ([answer("toolu_1")], [WEATHER], "messages.0.content.0.tool_use_id"),
    ([*ASKED, answer("toolu_1"), {"role": "assistant", "content": "Sunny."},
      answer("toolu_1")], [WEATHER], "messages.4.content.0.tool_use_id"),
    ([*ASKED, answer("toolu_1", {"type": "tool_result", "tool_use_id": "toolu_x"})],
     [WEATHER, SEARCH], "messages.2.content.1.tool_use_id"),
], ids=["unknown-id", "no-assistant-turn", "two-turns-back", "native-only"])
async def test_a_tool_result_answering_no_tool_use_is_refused_before_any_upstream(
    upstreams: Upstreams, upstream_model: str, messages: list[Json], tools: list[Json],
    path: str,
) -> None:
    message = await refused(upstreams, model=upstream_model, messages=messages, tools=tools)
    assert f"'{path}'" in message and "names no tool_use block" in message
    assert no_upstream_called(upstreams)


@pytest.mark.parametrize(("content", "path"), [
    ([image("image/png", "not base64!")], "messages.0.content.0.source.data"),
    ([image("image/png", "data:image/png;base64," + PNG)], "messages.0.content.0.source.data"),
    ([image("image/png", PNG[:-1])], "messages.0.content.0.source.data"),
    ([{"type": "text", "text": "see"}, image("image/bmp", PNG)],
     "messages.0.content.1.source.media_type"),
    ([{"type": "document", "source": {"type": "base64", "media_type": "text/plain",
                                      "data": "aGk="}}], "messages.0.content.0.source.media_type"),
    ([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                      "data": "%PDF-1.4"}}], "messages.0.content.0.source.data"),
    # Past WHOLE_CHECK_CHARS only the start is decoded, the rest checked to be ASCII.
    ([image("image/png", "data:image/png;base64," + LARGE)], "messages.0.content.0.source.data"),
    ([image("image/png", LARGE + "\u00e9")], "messages.0.content.0.source.data"),
], ids=["garbage", "data-url", "truncated", "bmp", "text-document", "raw-pdf", "large-data-url",
        "large-not-ascii"])
async def test_a_base64_source_that_anthropic_refuses_is_refused_before_any_upstream(
    upstreams: Upstreams, upstream_model: str, content: list[Json], path: str,
) -> None:
    message = await refused(upstreams, model=upstream_model,
                            messages=[{"role": "user", "content": content}])
    assert f"'{path}'" in message
    assert no_upstream_called(upstreams)


async def test_an_image_in_a_tool_result_is_checked_too(upstreams: Upstreams) -> None:
    # Images in tool results make the request native-only: it went to Anthropic unchecked.
    result = {"type": "tool_result", "tool_use_id": "toolu_1",
              "content": [{"type": "text", "text": "here"}, image("image/png", "@@@@")]}
    message = await refused(upstreams, model="claude",
                            messages=[*ASKED, {"role": "user", "content": [result]}])
    assert "'messages.2.content.0.content.1.source.data'" in message
    assert no_upstream_called(upstreams)


@pytest.mark.parametrize(("choice", "tools", "path"), [
    ({"type": "tool", "name": "get_time"}, [WEATHER], "tool_choice.name"),
    ({"type": "tool", "name": "get_weather"}, None, "tool_choice.name"),
    ({"type": "tool"}, [WEATHER], "tool_choice.name"),
    ({"type": "tool", "name": "get_time"}, [WEATHER, SEARCH], "tool_choice.name"),
    ({"type": "function"}, [SEARCH], "tool_choice.type"),
], ids=["unknown-name", "no-tools", "no-name", "native-only-name", "native-only-type"])
async def test_a_tool_choice_naming_no_tool_is_refused_before_any_upstream(
    upstreams: Upstreams, upstream_model: str, choice: Json, tools: list[Json] | None,
    path: str,
) -> None:
    extra: Json = {"tools": tools} if tools is not None else {}
    message = await refused(upstreams, model=upstream_model, tool_choice=choice, **extra)
    assert f"'{path}'" in message
    assert no_upstream_called(upstreams)


@pytest.mark.parametrize(("messages", "extra"), [
    ([*ASKED, answer("toolu_1", {"type": "text", "text": "and tomorrow?"})], {}),
    ([*USER, {"role": "assistant", "content": "Let me check."}, ASKED[1],
      answer("toolu_1"), {"role": "user", "content": "Thanks."}], {}),
    ([*ASKED, answer("toolu_1")], {"tool_choice": {"type": "any"}}),
    ([*USER], {"tool_choice": {"type": "none"}}),
    ([*USER], {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ([*USER], {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    ([{"role": "user", "content": [image("image/png", PNG), image("image/gif", "R0lG\nODlh"),
                                   {"type": "text", "text": "what are these?"}]}], {}),
    ([{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}]}], {}),
    # Not certainly refused by Anthropic, and taken by Gemini (protobuf's JSON reads both
    # alphabets, padded or not): let through rather than refused on a guess.
    ([{"role": "user", "content": [image("image/png", PNG.replace("/", "_")),
                                   image("image/png", PNG.rstrip("="))]}], {}),
    ([{"role": "user", "content": [image("image/png", LARGE),
                                   image("image/png", base64.encodebytes(LARGE_BYTES)
                                         .decode())]}], {}),
], ids=["text-after-results", "split-assistant-turn", "any", "none", "auto", "named",
        "images", "pdf", "url-safe-unpadded", "large"])
async def test_requests_within_anthropics_rules_reach_the_upstream(
    upstreams: Upstreams, upstream_model: str, messages: list[Json], extra: Json,
) -> None:
    upstreams.say(upstream_model, "fine")
    async with sdk(upstreams) as client:
        reply = await client.messages.create(model=upstream_model, max_tokens=32,
                                             messages=messages, tools=[WEATHER], **extra)
    assert reply.content[0].text == "fine"  # type: ignore[union-attr]
    assert upstreams.last_body(upstream_model)


async def test_a_tool_choice_may_name_a_server_tool_for_anthropic(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        await client.messages.create(model="claude", max_tokens=32, messages=USER,  # type: ignore[arg-type]
                                     tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                                     tool_choice={"type": "tool", "name": "web_search"})
    assert upstreams.anthropic.requests[-1].body["tool_choice"]["name"] == "web_search"
