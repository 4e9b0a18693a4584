"""Tests for gateway/api/messages_out.py: answers, streams and errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.api.messages_out import MessageEvents, error_response, message_body, usage_body
from gateway.core.errors import (
    FailureKind,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    UpstreamFailed,
    UpstreamFailure,
)

Json = dict[str, Any]


def chunk(delta: Json, finish: str | None = None, **extra: Any) -> Json:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def events(raw: bytes) -> list[tuple[str, Json]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_text_then_two_tool_calls_stream_as_three_blocks_in_order() -> None:
    writer = MessageEvents()
    raw = b"".join(writer.chunk(c) for c in [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me look."}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a",
                                                                    "arguments": "{\"x\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "b",
                                                                    "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"object": "chat.completion.chunk", "choices": [], "usage": {
            "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 3}}},
    ]) + writer.end()
    seen = events(raw)
    assert [name for name, _ in seen] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    starts = [d["content_block"] for n, d in seen if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use", "tool_use"]
    assert [b.get("id") for b in starts[1:]] == ["c1", "c2"]
    delta = seen[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 7, "output_tokens": 4,
                              "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0}


def test_whole_answer_becomes_a_message_with_parsed_tool_input() -> None:
    body = message_body({"id": "chatcmpl-9", "model": "m", "choices": [{
        "finish_reason": "length", "message": {"content": "partial", "tool_calls": [
            {"id": "c1", "function": {"name": "a", "arguments": "not json"}}]}}]}, None)
    assert body["stop_reason"] == "max_tokens"
    assert body["content"] == [{"type": "text", "text": "partial"},
                               {"type": "tool_use", "id": "c1", "name": "a",
                                "input": {"arguments": "not json"}}]
    assert body["id"].startswith("msg_")


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequest("bad"), 400, "invalid_request_error"),
    (ModelNotFound("no"), 404, "not_found_error"),
    (RateLimited("slow", retry_after_s=1), 429, "rate_limit_error"),
    (UpstreamFailed("down", status=503, code="x"), 529, "overloaded_error"),
    (UpstreamFailed("bad", status=502, code="x"), 500, "api_error"),
    (UpstreamFailed("slow", status=504, code="x"), 504, "timeout_error"),
    (GatewayError("oops"), 500, "api_error"),
])
def test_errors_take_anthropics_status_and_type(
    error: GatewayError, status: int, kind: str
) -> None:
    assert error_response(error) == (status, {"type": "error",
                                              "error": {"type": kind, "message": error.message}})


def test_a_broken_stream_ends_with_an_error_event() -> None:
    writer = MessageEvents()
    writer.chunk(chunk({"content": "Hi"}))
    failure = UpstreamFailure(FailureKind.CONNECT, "reset", status=529)
    [(name, data)] = events(writer.error(failure))
    assert name == "error" and data["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("calls", [True, 5, 1.5], ids=["true", "int", "float"])
def test_tool_calls_that_are_not_a_list_are_no_calls(calls: Any) -> None:
    # A provider's answer is untrusted JSON: this was a TypeError, a 500 (or a broken stream).
    body = {"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"content": "Hi", "tool_calls": calls}}]}
    assert message_body(body, None)["content"] == [{"type": "text", "text": "Hi"}]
    writer = MessageEvents()
    raw = writer.chunk(chunk({"content": "Hi", "tool_calls": calls})) + writer.end()
    assert [n for n, _ in events(raw)].count("content_block_start") == 1


def test_usage_tells_tokens_written_to_cache_apart_from_fresh_input() -> None:
    usage = usage_body({"prompt_tokens": 1150, "completion_tokens": 10, "prompt_tokens_details": {
        "cached_tokens": 1000, "cache_write_tokens": 50}})
    assert usage == {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000,
                     "cache_creation_input_tokens": 50}


def test_usage_splits_cache_writes_by_lifetime_as_anthropic_does() -> None:
    usage = usage_body({"prompt_tokens": 1350, "completion_tokens": 10, "prompt_tokens_details": {
        "cached_tokens": 1000, "cache_write_tokens": 250, "cache_creation_token_details": {
            "ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 200}}})
    assert usage == {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000,
                     "cache_creation_input_tokens": 250, "cache_creation": {
                         "ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 200}}
