"""Cheap-first escalation: the checks that send a request on to the next tier.

When a routed request's answer fails a check, the gateway asks the next tier of
``[routing] tier_order``. ``check_answer`` looks at a whole (non-streamed) answer:

- ``empty_answer``: no choice, or a choice with neither text nor tool calls;
- ``truncated``: ``finish_reason: length`` although the client set no token limit;
- ``invalid_json``: ``response_format`` asks for JSON and the text does not parse (or, for
  ``json_object``, is not an object);
- ``schema_mismatch``: the JSON breaks the ``json_schema`` the client gave (the subset that
  ``jsonschema_lite`` understands);
- ``bad_tool_call``: a tool call names no tool of the request, or its arguments are not a JSON
  object matching the tool's ``parameters`` (required keys, types, enums).

``check_failure`` covers the failure that needs no answer: every deployment of the tier failed
(or is resting behind an open circuit); a request the provider refused as invalid is the
client's to fix and never escalates. ``next_tier`` gives the tier to ask next. Pure functions.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.answer import Completion
from gateway.core.chat import ChatRequest
from gateway.core.errors import ServiceUnavailable, UpstreamFailed
from gateway.core.routing_settings import next_tier
from gateway.routing.jsonschema_lite import validate

__all__ = [
    "EscalationKind",
    "EscalationReason",
    "check_answer",
    "check_failure",
    "next_tier",
]


class EscalationKind(enum.StrEnum):
    EMPTY = "empty_answer"
    TRUNCATED = "truncated"
    INVALID_JSON = "invalid_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    BAD_TOOL_CALL = "bad_tool_call"
    TIER_FAILED = "tier_failed"


@dataclass(frozen=True, slots=True)
class EscalationReason:
    """Why an answer (or a whole tier) was not good enough; ``detail`` is for logs."""

    kind: EscalationKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


def check_answer(request: ChatRequest, completion: Completion) -> EscalationReason | None:
    """The first check the answer fails, or None when it may go to the client."""
    choices = completion.body.get("choices")
    if not isinstance(choices, list) or not choices:
        return EscalationReason(EscalationKind.EMPTY, "the answer has no choices")
    for choice in choices:
        reason = _check_choice(request, choice if isinstance(choice, dict) else {})
        if reason is not None:
            return reason
    return None


def check_failure(error: BaseException) -> EscalationReason | None:
    """``TIER_FAILED`` when every deployment of the tier failed or rests; otherwise None."""
    if isinstance(error, UpstreamFailed | ServiceUnavailable):
        return EscalationReason(EscalationKind.TIER_FAILED, str(error))
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _check_choice(request: ChatRequest, choice: Mapping[str, Any]) -> EscalationReason | None:
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    text = _text(message.get("content"))
    tool_calls = message.get("tool_calls") or []
    if not text.strip() and not tool_calls and not message.get("refusal"):
        return EscalationReason(EscalationKind.EMPTY, "the answer has no content")
    if choice.get("finish_reason") == "length" and request.max_tokens is None:
        return EscalationReason(EscalationKind.TRUNCATED,
                                "the answer was cut at the model's length limit")
    if tool_calls:
        return _check_tool_calls(request, tool_calls)
    if text.strip() and request.response_format is not None:
        return _check_json(request.response_format, text)
    return None


def _check_json(response_format: Mapping[str, Any], text: str) -> EscalationReason | None:
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return EscalationReason(EscalationKind.INVALID_JSON, f"the answer is not JSON ({exc})")
    if kind == "json_object" and not isinstance(value, dict):
        return EscalationReason(EscalationKind.INVALID_JSON, "the answer is not a JSON object")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if isinstance(schema, dict):
        problem = validate(value, schema)
        if problem is not None:
            return EscalationReason(EscalationKind.SCHEMA_MISMATCH, problem)
    return None


def _tool_schemas(request: ChatRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in request.tools:
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out[function["name"]] = function.get("parameters")
    return out


def _check_tool_calls(request: ChatRequest, calls: Any) -> EscalationReason | None:
    if not isinstance(calls, list):
        return EscalationReason(EscalationKind.BAD_TOOL_CALL, "tool_calls is not a list")
    schemas = _tool_schemas(request)
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return EscalationReason(EscalationKind.BAD_TOOL_CALL, f"tool call {i} has no function")
        problem = _check_arguments(function, schemas)
        if problem is not None:
            return EscalationReason(EscalationKind.BAD_TOOL_CALL, f"tool call {i}: {problem}")
    return None


def _check_arguments(function: Mapping[str, Any], schemas: Mapping[str, Any]) -> str | None:
    name = function.get("name")
    if schemas and name not in schemas:
        return f"no tool named {name!r} in the request"
    raw = function.get("arguments")
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        return f"arguments are not JSON ({exc})"
    if not isinstance(arguments, dict):
        return "arguments are not a JSON object"
    schema = schemas.get(name) if isinstance(name, str) else None
    return validate(arguments, schema) if isinstance(schema, dict) else None
