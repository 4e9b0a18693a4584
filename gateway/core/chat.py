"""The chat completion request, parsed at the edge into a typed value.

``parse_chat_request`` turns the raw body into a ``ChatRequest`` or raises ``InvalidRequest``
naming the offending parameter. The original body is kept (``body``) so that fields this module
does not know still pass through to OpenAI-compatible providers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.core import json_depth
from gateway.core.errors import InvalidRequest
from gateway.core.tool_turns import Said, check_answers

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str | list[Any] | None
    name: str | None = None
    tool_calls: tuple[Json, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with the text parts of multi-part content joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(
            str(part.get("text", "")) for part in self.content
            if isinstance(part, dict) and part.get("type") == "text"
        )


@dataclass(frozen=True, slots=True)
class Native:
    """A request as its client sent it, in a dialect other than chat completions.

    A provider that speaks ``dialect`` sends ``body`` (with its own model name) instead of
    translating the chat request back, so nothing the translation cannot carry is lost.
    """

    dialect: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    only: tuple[str, ...] = ()
    """Fields only a provider speaking ``dialect`` can carry (server tools, say): every other
    provider refuses the request as unsupported, so failover looks for one that can."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    n: int
    seed: int | None
    stop: tuple[str, ...]
    tools: tuple[Json, ...]
    tool_choice: str | Json | None
    response_format: Json | None
    body: Mapping[str, Any]
    native: Native | None = None
    """The client's own body when it spoke another dialect (``gateway.api.messages``)."""

    def with_model(self, model: str) -> ChatRequest:
        """The same request addressed to another (upstream) model name."""
        return replace(self, model=model, body={**self.body, "model": model})


def json_object(raw: bytes) -> Json:
    """A request body parsed as a JSON object; ``InvalidRequest`` when it is not one."""
    try:
        body = json_depth.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate an OpenAI chat completions body; raise ``InvalidRequest`` naming the field.

    Beyond each field's shape, each ``tool`` message must answer a tool call of the assistant
    message before it (``gateway.core.tool_turns``), as OpenAI requires.
    """
    chat = chat_request(json_object(raw))
    check_answers(_said(chat.messages), "tool call")
    return chat


def _said(messages: tuple[Message, ...]) -> Iterator[Said]:
    for i, m in enumerate(messages):
        calls = frozenset(c["id"] for c in m.tool_calls if isinstance(c.get("id"), str))
        answers = ((f"messages[{i}].tool_call_id", m.tool_call_id),) if m.role == "tool" else ()
        yield Said(m.role, calls, answers)


def chat_request(body: Json) -> ChatRequest:
    """``parse_chat_request`` for a body already parsed as a JSON object."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise field_error("model", "a non-empty string", model)
    messages = _messages(body.get("messages"))
    stream = _optional(body, "stream", bool) or False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise field_error("stream_options", "an object", options)
    include_usage = bool(stream and options and options.get("include_usage") is True)
    max_tokens = _max_tokens(body)
    n = _optional(body, "n", int)
    if n is not None and not 1 <= n <= 128:
        raise field_error("n", "an integer from 1 to 128", n)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        n=n or 1,
        seed=_optional(body, "seed", int),
        stop=_stop(body.get("stop")),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=_response_format(body.get("response_format")),
        body=body,
    )


_SHOWN_CHARS = 40


def shown_value(got: Any) -> str:
    """What the client sent, as a message shows it: the value itself when it is short (``0``,
    ``true``, ``'fast'``), else its JSON type (``an object``, ``a string of 5000 characters``)."""
    if got is None or isinstance(got, bool):
        return "null" if got is None else str(got).lower()
    if isinstance(got, int | float):
        return repr(got)
    if isinstance(got, str):
        if len(got) <= _SHOWN_CHARS:
            return repr(got)
        return f"a string of {len(got)} characters"
    if isinstance(got, dict):
        return "an object"
    return "an array" if isinstance(got, list) else type(got).__name__


def field_error(name: str, expected: str, got: Any) -> InvalidRequest:
    """A 400 naming the parameter, what it should be, and what it was."""
    return InvalidRequest(
        f"Invalid value for '{name}': expected {expected}, got {shown_value(got)}.", param=name
    )


def _optional(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise field_error(name, f"{'an integer' if kind is int else kind.__name__}", value)
    if not isinstance(value, kind):
        expected = {bool: "a boolean", int: "an integer"}.get(kind, kind.__name__)
        raise field_error(name, expected, value)
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error(name, "a number", value)
    if not low <= value <= high:
        raise field_error(name, f"a number from {low:g} to {high:g}", value)
    return float(value)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = _optional(body, name, int)
        if value is not None:
            if value < 1:
                raise field_error(name, "an integer of 1 or more", value)
            return int(value)
    return None


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise field_error("messages", "a non-empty array", value)
    return tuple(_message(i, m) for i, m in enumerate(value))


def _message(i: int, m: Any) -> Message:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise field_error(where, "an object", m)
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': expected one of {', '.join(sorted(ROLES))}.",
            param=f"{where}.role",
        )
    content = m.get("content")
    if content is not None and not isinstance(content, str | list):
        raise field_error(f"{where}.content", "a string or an array of content parts", content)
    if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
        raise field_error(f"{where}.content", "an array of content part objects", content)
    tool_calls = m.get("tool_calls") or []
    if not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls):
        raise field_error(f"{where}.tool_calls", "an array of tool call objects", tool_calls)
    if content is None and role not in ("assistant",):
        raise field_error(f"{where}.content", "a string or an array of content parts", content)
    name, tool_call_id = m.get("name"), m.get("tool_call_id")
    if name is not None and not isinstance(name, str):
        raise field_error(f"{where}.name", "a string", name)
    if role == "tool" and not isinstance(tool_call_id, str):
        raise field_error(f"{where}.tool_call_id", "a string", tool_call_id)
    return Message(role, content, name, tuple(tool_calls), tool_call_id)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise field_error("stop", "a string or an array of up to 4 strings", value)


def _tools(value: Any) -> tuple[Json, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise field_error("tools", "an array", value)
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise field_error(f"tools[{i}].function.name", "a string", None)
        params = function.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise field_error(f"tools[{i}].function.parameters", "a JSON schema object", params)
    return tuple(value)


def _tool_choice(value: Any) -> str | Json | None:
    if value is None or value in ("none", "auto", "required"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        return value
    raise field_error("tool_choice", "'none', 'auto', 'required' or a function object", value)


def _response_format(value: Any) -> Json | None:
    if value is None:
        return None
    kinds = ("text", "json_object", "json_schema")
    if not isinstance(value, dict) or value.get("type") not in kinds:
        raise field_error("response_format.type", "'text', 'json_object' or 'json_schema'", value)
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise field_error("response_format.json_schema", "an object", value.get("json_schema"))
    return value

