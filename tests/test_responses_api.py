"""``/v1/responses`` through the official ``openai`` SDK, against a fake upstream of each wire
format: input items, function calls, ``previous_response_id``, the event stream, the store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import orjson
import pytest

from tests import fake_anthropic as fa
from tests.dialect_fixtures import Upstreams
from tests.fake_openai import Reply

Json = dict[str, Any]
SHELL = {"type": "function", "name": "shell", "description": "Run a command",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                        "required": ["cmd"]}}


def sdk(up: Upstreams) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=up.url("/v1"), api_key="unused", max_retries=0)


async def test_async_sdk_gets_output_text_from_every_upstream(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.say(upstream_model, "Hello from upstream")
    async with sdk(upstreams) as client:
        response = await client.responses.create(model=upstream_model, input="Say hello",
                                                 instructions="Be brief.")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from upstream"
    assert response.instructions == "Be brief."
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = orjson.dumps(upstreams.last_body(upstream_model)).decode()
    assert "Be brief." in sent and "Say hello" in sent


async def test_async_sdk_stream_events_build_the_same_response_from_every_upstream(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.say(upstream_model, "one two three")
    async with sdk(upstreams) as client, client.responses.stream(
        model=upstream_model, input="Count",
    ) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.delta", "response.output_text.done",
                 "response.output_item.done"):
        assert kind in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "one two three"
    assert final.usage is not None and final.usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_reasoning_tokens_reach_the_usage(upstreams: Upstreams, stream: bool) -> None:
    # Coding agents show (and budget by) output_tokens_details.reasoning_tokens.
    upstreams.openai.script.append(Reply(text="four words of answer", reasoning_tokens=120))
    async with sdk(upstreams) as client:
        if stream:
            async with client.responses.stream(model="gpt", input="Think") as events:
                response = await events.get_final_response()
        else:
            response = await client.responses.create(model="gpt", input="Think")
    assert response.usage is not None
    assert response.usage.output_tokens == 124
    assert response.usage.output_tokens_details.reasoning_tokens == 120


async def test_sync_sdk_plain_and_streamed(upstreams: Upstreams) -> None:
    upstreams.say("gpt", "plain answer")
    upstreams.say("gpt", "streamed answer")

    def both() -> tuple[str, str]:
        with openai.OpenAI(base_url=upstreams.url("/v1"), api_key="k", max_retries=0) as client:
            plain = client.responses.create(model="gpt", input="hi").output_text
            with client.responses.stream(model="gpt", input="hi") as stream:
                streamed = stream.get_final_response().output_text
        return plain, streamed

    # The sync client blocks its thread; the gateway runs on this test's event loop.
    assert await asyncio.to_thread(both) == ("plain answer", "streamed answer")


async def test_function_call_round_trip_with_previous_response_id_on_every_upstream(
    upstreams: Upstreams, upstream_model: str
) -> None:
    upstreams.call(upstream_model, "shell", {"cmd": "ls"})
    upstreams.say(upstream_model, "Two files.")
    async with sdk(upstreams) as client:
        first = await client.responses.create(model=upstream_model, input="List files",
                                              tools=[SHELL])  # type: ignore[list-item]
        call = next(item for item in first.output if item.type == "function_call")
        assert (call.name, json.loads(call.arguments)) == ("shell", {"cmd": "ls"})  # type: ignore[union-attr]
        second = await client.responses.create(
            model=upstream_model, previous_response_id=first.id, tools=[SHELL],  # type: ignore[list-item]
            input=[{"type": "function_call_output", "call_id": call.call_id,  # type: ignore[union-attr]
                    "output": "a.txt b.txt"}],
        )
    assert second.output_text == "Two files." and second.previous_response_id == first.id
    sent = orjson.dumps(upstreams.last_body(upstream_model)).decode()
    assert "List files" in sent and "a.txt b.txt" in sent  # the whole conversation went up


async def test_streamed_function_call_arrives_as_argument_deltas(upstreams: Upstreams) -> None:
    upstreams.call("gpt", "shell", {"cmd": "pwd"})
    async with sdk(upstreams) as client, client.responses.stream(
        model="gpt", input="Where am I?", tools=[SHELL],  # type: ignore[list-item]
    ) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"cmd": "pwd"}


async def test_json_schema_format_reaches_every_upstream_as_its_own_json_mode(
    upstreams: Upstreams, upstream_model: str
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    if upstream_model == "claude":  # Anthropic answers JSON as the input of a forced tool
        upstreams.anthropic.script.append(fa.tool_use([("json_response", {"city": "Oslo"})]))
    else:
        upstreams.say(upstream_model, '{"city": "Oslo"}')
    async with sdk(upstreams) as client:
        response = await client.responses.create(
            model=upstream_model, input="Capital of Norway as JSON",
            text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
        )
    assert json.loads(response.output_text) == {"city": "Oslo"}
    sent = upstreams.last_body(upstream_model)
    if upstream_model == "gpt":
        assert sent["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    elif upstream_model == "gemini":
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
    else:
        assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}


async def test_errors_map_to_the_sdks_classes_naming_the_field(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        with pytest.raises(openai.BadRequestError) as built_in:
            await client.responses.create(model="gpt", input="news?",
                                          tools=[{"type": "web_search"}])  # type: ignore[list-item]
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="nope", input="hi")
    assert built_in.value.param == "tools[0].type"
    assert not upstreams.openai.requests


async def test_stored_response_can_be_fetched_and_deleted(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        made = await client.responses.create(model="gpt", input="remember me")
        fetched = await client.responses.retrieve(made.id)
        assert fetched.id == made.id and fetched.output_text == made.output_text
        await client.responses.delete(made.id)
        try:
            await client.responses.retrieve(made.id)
            raise AssertionError("a deleted response was still served")
        except openai.NotFoundError:
            pass


async def test_store_false_keeps_nothing_to_continue(upstreams: Upstreams) -> None:
    async with sdk(upstreams) as client:
        made = await client.responses.create(model="gpt", input="forget me", store=False)
        try:
            await client.responses.create(model="gpt", input="and?", previous_response_id=made.id)
            raise AssertionError("an unstored response was continued")
        except openai.NotFoundError as error:
            assert error.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_an_unknown_previous_id_is_named_when_short_and_described_when_long(
    upstreams: Upstreams,
) -> None:
    for previous, shown in (("resp_nope", "'resp_nope'"),
                            ("resp_" + "x" * 100_000, "a string of 100005 characters")):
        resp = await upstreams.client.post("/v1/responses", json={
            "model": "gpt", "input": "and?", "previous_response_id": previous})
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["message"] == f"Previous response with id {shown} not found."
        assert error["param"] == "previous_response_id"


async def test_upstream_breaking_mid_stream_ends_in_error_and_response_failed(
    upstreams: Upstreams,
) -> None:
    upstreams.openai.script.append(Reply(kind="cut", chunks_before_cut=3))
    resp = await upstreams.client.post("/v1/responses",
                                       json={"model": "gpt", "input": "hi", "stream": True})
    text = await resp.text()
    kinds = [line.removeprefix("event: ") for line in text.splitlines()
             if line.startswith("event: ")]
    assert resp.status == 200
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds


async def test_gemini_thought_signature_survives_previous_response_id_and_full_replay(
    upstreams: Upstreams,
) -> None:
    from tests import fake_gemini as fg

    for _ in range(2):
        upstreams.gemini.script.append(fg.function_calls([("shell", {"cmd": "ls"})],
                                                         signature="c2ln/+=="))
    async with sdk(upstreams) as client:
        first = await client.responses.create(model="gemini", input="ls", tools=[SHELL])  # type: ignore[list-item]
        call = first.output[0]
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "a"}  # type: ignore[union-attr]
        await client.responses.create(model="gemini", previous_response_id=first.id,
                                      tools=[SHELL], input=[output])  # type: ignore[list-item]
        by_id = [p for c in upstreams.last_body("gemini")["contents"] for p in c["parts"]]
        await client.responses.create(model="gemini", tools=[SHELL], store=False, input=[  # type: ignore[list-item]
            {"role": "user", "content": "ls"}, call.model_dump(), output])  # type: ignore[list-item]
        replayed = [p for c in upstreams.last_body("gemini")["contents"] for p in c["parts"]]
    for parts in (by_id, replayed):
        assert next(p for p in parts if "functionCall" in p)["thoughtSignature"] == "c2ln/+=="
