"""The gateway's answers in Anthropic's Messages format: whole messages, event streams, errors.

``message_body`` turns a ``chat.completion`` into a Messages ``message``; ``MessageEvents``
turns ``chat.completion.chunk``s into Anthropic's event sequence (``message_start``, ``ping``,
``content_block_start``/``_delta``/``_stop`` with text and ``input_json`` deltas,
``message_delta`` with the stop reason and usage, ``message_stop``). When the upstream itself
spoke Messages, its own answer and events go out as they came (``Completion.native``, the
``NATIVE_EVENTS`` of each chunk), thinking blocks and signatures included. ``error_body`` is
Anthropic's error shape with Anthropic's status codes, for every error on ``/v1/messages``.
Pure functions and per-request state: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.api.call_ids import outward_id
from gateway.core import json_depth
from gateway.core.answer import (
    NATIVE_EVENTS,
    Json,
    as_index,
    as_list,
    as_obj,
    as_str,
    completion_id,
    usage_from_openai,
)
from gateway.core.errors import GatewayError, UpstreamFailure

STOP_REASONS = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
    "function_call": "tool_use", "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error",
}
_STATUS = {415: 400, 502: 500, 503: 529}
"""Gateway statuses Anthropic does not use, as the ones it does (503 is its 529 overloaded)."""


def error_response(error: GatewayError) -> tuple[int, Json]:
    """Anthropic's status and ``{"type": "error", "error": {"type", "message"}}`` for ``error``."""
    status = _STATUS.get(error.status, error.status)
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


def usage_body(openai_usage: Any) -> Json:
    """Anthropic's usage from OpenAI's: its input tokens leave out what was read from cache
    and what was written to it; the writes are split by lifetime when some were for an hour."""
    usage = usage_from_openai(openai_usage)
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    written = usage.cache_write_tokens
    body: Json = {"input_tokens": usage.prompt_tokens - usage.cached_tokens - written,
                  "output_tokens": usage.completion_tokens,
                  "cache_read_input_tokens": usage.cached_tokens,
                  "cache_creation_input_tokens": written}
    if hour := usage.cache_write_1h_tokens:
        body["cache_creation"] = {"ephemeral_5m_input_tokens": written - hour,
                                  "ephemeral_1h_input_tokens": hour}
    return body


def message_body(body: Json, native: Json | None) -> Json:
    """A ``chat.completion`` as a Messages ``message`` (the upstream's own when it has one)."""
    if native is not None:
        return native
    choice = as_obj((body.get("choices") or [{}])[0])
    message = as_obj(choice.get("message"))
    content: list[Json] = []
    if text := as_str(message.get("content")):
        content.append({"type": "text", "text": text})
    for call in as_list(message.get("tool_calls")):
        function = as_obj(as_obj(call).get("function"))
        content.append({"type": "tool_use", "id": _tool_id(call),
                        "name": as_str(function.get("name")),
                        "input": _arguments(function.get("arguments"))})
    return {
        "id": _message_id(body), "type": "message", "role": "assistant",
        "model": as_str(body.get("model")), "content": content,
        "stop_reason": STOP_REASONS.get(as_str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None, "usage": usage_body(body.get("usage")),
    }


def _message_id(body: Json) -> str:
    given = as_str(body.get("id"))
    return given if given.startswith("msg_") else completion_id("msg").replace("-", "_")


def _tool_id(call: Any) -> str:
    return outward_id(call) or completion_id("toolu").replace("-", "_")


def _arguments(arguments: Any) -> Json:
    """A tool call's arguments as the object Anthropic sends; what does not parse, kept whole."""
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        parsed = json_depth.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def event(kind: str, payload: Json) -> bytes:
    """One server-sent event in Anthropic's framing (``event:`` line, then ``data:``)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def stream_error(failure: UpstreamFailure | None) -> bytes:
    """Anthropic's in-stream ``error`` event for a stream that broke after it had begun."""
    if failure is None:
        kind, message = "api_error", "The gateway hit an internal error while streaming."
    else:
        kind = "overloaded_error" if failure.status == 529 else "api_error"
        message = f"The upstream stream broke after it had started: {failure.message}"
    return event("error", {"type": "error", "error": {"type": kind, "message": message}})


class MessageEvents:
    """A ``ChunkWriter``: OpenAI chunks in, Anthropic's event sequence out."""

    __slots__ = ("block", "blocks", "native", "started", "stop_reason", "tools", "usage")

    def __init__(self) -> None:
        self.native = False
        self.started = False
        self.block = -1
        """The index of the open content block (-1: none is open)."""
        self.blocks = 0
        self.tools: dict[int, int] = {}
        """OpenAI tool call index → the content block that carries it."""
        self.stop_reason = "end_turn"
        self.usage: Any = None

    def chunk(self, chunk: Json) -> bytes:
        native = chunk.get(NATIVE_EVENTS)
        if native is not None:
            self.native = True
            return b"".join(event(as_str(e.get("type")), e) for e in native)
        if self.native:
            return b""  # the translated twin of events already sent
        out = [] if self.started else [self._start(chunk)]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = as_obj(choice.get("delta"))
            if text := as_str(delta.get("content")):
                out.append(self._text(text))
            for call in as_list(delta.get("tool_calls")):
                out.append(self._tool(as_obj(call)))
            if reason := as_str(choice.get("finish_reason")):
                self.stop_reason = STOP_REASONS.get(reason, "end_turn")
        return b"".join(out)

    def _start(self, chunk: Json) -> bytes:
        self.started = True
        message: Json = {
            "id": _message_id(chunk), "type": "message", "role": "assistant",
            "model": as_str(chunk.get("model")), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return (event("message_start", {"type": "message_start", "message": message})
                + event("ping", {"type": "ping"}))

    def _open(self, block: Json) -> bytes:
        out = self._close()
        self.block, self.blocks = self.blocks, self.blocks + 1
        return out + event("content_block_start", {
            "type": "content_block_start", "index": self.block, "content_block": block})

    def _close(self) -> bytes:
        if self.block < 0:
            return b""
        index, self.block = self.block, -1
        return event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: Json) -> bytes:
        return event("content_block_delta",
                     {"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, text: str) -> bytes:
        is_text = self.block >= 0 and self.block not in self.tools.values()
        out = b"" if is_text else self._open({"type": "text", "text": ""})
        return out + self._delta(self.block, {"type": "text_delta", "text": text})

    def _tool(self, call: Json) -> bytes:
        position = as_index(call.get("index"))
        function = as_obj(call.get("function"))
        out = b""
        if position not in self.tools:
            out = self._open({"type": "tool_use", "id": _tool_id(call),
                              "name": as_str(function.get("name")), "input": {}})
            self.tools[position] = self.block
        arguments = as_str(function.get("arguments"))
        if not arguments:
            return out
        return out + self._delta(self.tools[position],
                                 {"type": "input_json_delta", "partial_json": arguments})

    def end(self) -> bytes:
        if self.native:
            return b""
        usage = usage_body(self.usage)
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                 "usage": usage}
        return (self._close() + event("message_delta", delta)
                + event("message_stop", {"type": "message_stop"}))

    def error(self, failure: UpstreamFailure | None) -> bytes:
        return stream_error(failure)
