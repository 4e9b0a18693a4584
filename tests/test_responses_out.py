"""Tests for gateway/api/responses_out.py: response objects and the Responses event stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from gateway.api.responses_out import ResponseEvents, Shape, output_messages, response_object
from gateway.core.errors import FailureKind, UpstreamFailure

Json = dict[str, Any]
SHAPE = Shape.of({"model": "m", "input": "hi", "instructions": "Be brief.",
                  "tools": [{"type": "function", "name": "ls", "parameters": {}}]})


def chunk(delta: Json, finish: str | None = None) -> Json:
    return {"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def parsed(raw: bytes) -> list[Json]:
    return [orjson.loads(frame.split("\ndata: ")[1]) for frame in raw.decode().split("\n\n")
            if frame]


def test_text_and_a_call_stream_as_numbered_events_closing_each_item() -> None:
    writer = ResponseEvents(SHAPE)
    raw = b"".join(writer.chunk(c) for c in [
        chunk({"role": "assistant", "content": "Looking"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1",
                               "function": {"name": "ls", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ])
    final = writer.complete()
    seen = parsed(raw + writer.end())
    assert [e["type"] for e in seen] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    completed = Response.model_validate(seen[-1]["response"])
    assert completed.output_text == "Looking" and completed.usage is not None
    assert completed.usage.total_tokens == 7
    assert output_messages(final) == [{"role": "assistant", "content": "Looking", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}]


def test_a_truncated_answer_is_an_incomplete_response() -> None:
    body = response_object(SHAPE, {"model": "m", "choices": [
        {"finish_reason": "length", "message": {"content": "cut sh"}}]})
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert Response.model_validate(body).output_text == "cut sh"


def test_a_broken_stream_ends_with_error_then_response_failed() -> None:
    writer = ResponseEvents(SHAPE)
    writer.chunk(chunk({"content": "Hi"}))
    seen = parsed(writer.error(UpstreamFailure(FailureKind.CONNECT, "reset")))
    assert [e["type"] for e in seen] == ["error", "response.failed"]
    assert seen[1]["response"]["status"] == "failed"
    assert Response.model_validate(seen[1]["response"]).error is not None


@pytest.mark.parametrize("calls", [True, 5, 1.5], ids=["true", "int", "float"])
def test_tool_calls_that_are_not_a_list_are_no_calls(calls: Any) -> None:
    # A provider's answer is untrusted JSON: this was a TypeError, a 500 (or a broken stream).
    body = {"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"content": "Hi", "tool_calls": calls}}]}
    assert [item["type"] for item in response_object(SHAPE, body)["output"]] == ["message"]
    writer = ResponseEvents(SHAPE)
    raw = writer.chunk(chunk({"content": "Hi", "tool_calls": calls}))
    raw += writer.chunk(chunk({}, "stop")) + writer.end()
    assert [e["type"] for e in parsed(raw)].count("response.output_item.added") == 1
