"""Tests for gateway/routing/escalation.py: the checks that send an answer to the next tier."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.answer import Completion
from gateway.core.chat import ChatRequest, parse_chat_request
from gateway.core.errors import ServiceUnavailable, UpstreamFailed, UpstreamRejected
from gateway.routing.escalation import (
    EscalationKind,
    check_answer,
    check_failure,
    next_tier,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


def request(**body: Any) -> ChatRequest:
    return parse_chat_request(orjson.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body}))


def answer(content: Any = "Hello!", finish: str = "stop", **message: Any) -> Completion:
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message},
              "finish_reason": finish}
    return Completion({"id": "x", "object": "chat.completion", "choices": [choice]}, None)


def kind(req: ChatRequest, completion: Completion) -> EscalationKind | None:
    reason = check_answer(req, completion)
    return reason.kind if reason is not None else None


def test_a_good_answer_passes() -> None:
    assert check_answer(request(), answer()) is None


def test_an_empty_answer_escalates() -> None:
    assert kind(request(), answer("  ")) is EscalationKind.EMPTY
    assert kind(request(), answer(None)) is EscalationKind.EMPTY
    assert kind(request(), Completion({"choices": []}, None)) is EscalationKind.EMPTY


def test_a_refusal_is_not_empty() -> None:
    assert check_answer(request(), answer(None, refusal="I can't help with that.")) is None


def test_length_escalates_only_when_the_client_set_no_limit() -> None:
    assert kind(request(), answer("Once upon", "length")) is EscalationKind.TRUNCATED
    assert check_answer(request(max_tokens=5), answer("Once upon", "length")) is None


def test_json_mode_needs_a_json_object() -> None:
    req = request(response_format={"type": "json_object"})
    assert check_answer(req, answer('{"a": 1}')) is None
    assert kind(req, answer("```json\n{}\n```")) is EscalationKind.INVALID_JSON
    assert kind(req, answer("[1, 2]")) is EscalationKind.INVALID_JSON


def test_a_json_schema_is_validated() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    req = request(response_format={"type": "json_schema",
                                   "json_schema": {"name": "s", "schema": schema}})
    assert check_answer(req, answer('{"n": 3}')) is None
    reason = check_answer(req, answer('{"n": "3"}'))
    assert reason is not None and reason.kind is EscalationKind.SCHEMA_MISMATCH
    assert "$.n" in reason.detail
    assert kind(req, answer("not json")) is EscalationKind.INVALID_JSON


def tool_call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_call_arguments_are_checked_against_the_tool() -> None:
    req = request(tools=[WEATHER_TOOL])
    good = answer(None, "tool_calls", tool_calls=[tool_call("get_weather", '{"city": "Oslo"}')])
    assert check_answer(req, good) is None
    for bad in ('{"town": "Oslo"}', "{city: Oslo}", '["Oslo"]', '{"city": 7}'):
        broken = answer(None, "tool_calls", tool_calls=[tool_call("get_weather", bad)])
        assert kind(req, broken) is EscalationKind.BAD_TOOL_CALL, bad
    unknown = answer(None, "tool_calls", tool_calls=[tool_call("get_time", "{}")])
    assert kind(req, unknown) is EscalationKind.BAD_TOOL_CALL


def test_a_whole_tier_failing_escalates_but_a_rejected_request_does_not() -> None:
    failed = check_failure(UpstreamFailed("every deployment failed", status=502, code="x"))
    assert failed is not None and failed.kind is EscalationKind.TIER_FAILED
    assert check_failure(ServiceUnavailable("resting")) is not None
    assert check_failure(UpstreamRejected("bad", status=400, param=None, code=None)) is None
    assert check_failure(ValueError("x")) is None


def test_next_tier_follows_the_configured_order() -> None:
    assert next_tier("cheap", ("cheap", "reasoning")) == "reasoning"
    assert next_tier("reasoning", ("cheap", "reasoning")) is None
