"""The Anthropic adapter's answers: a Messages API response or event stream as OpenAI's.

A ``message`` becomes a ``chat.completion``; the event stream (``message_start`` …
``message_stop``) becomes ``chat.completion.chunk`` objects, each carrying the events it came
from when the client speaks Messages too (``NATIVE_EVENTS``), the first with the usage
``message_start`` told (``USAGE_SO_FAR``), closed by a usage chunk. In JSON
mode the forced ``JSON_TOOL``'s input is the answer's content. Cache-creation and cache-read
tokens count as prompt tokens, each also in its own class (``Usage``), priced on its own; so
do the cache-creation tokens written for an hour (``usage.cache_creation``'s split by lifetime).
Pure translation: touches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.answer import (
    NATIVE_EVENTS,
    USAGE_SO_FAR,
    Completion,
    Json,
    Usage,
    as_index,
    as_obj,
    as_str,
    assistant_message,
    chunk,
    completion,
    completion_id,
    event_json,
    token_count,
    usage_chunk,
)
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.calls import error_message
from gateway.upstream.sse import SseEvent

JSON_TOOL = "json_response"
"""The forced tool whose input is the answer in JSON mode (``response_format``)."""
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def completion_from(body: Any, model: str, json_mode: bool = False) -> Completion:
    """A Messages API answer as a ``chat.completion``; raises ``UpstreamFailure``."""
    if isinstance(body, dict) and body.get("type") == "error":
        raise error_failure(body)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, list):
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "Anthropic answered without content")
    texts, calls = _read_blocks(content, json_mode)
    choice = {
        "index": 0,
        "message": assistant_message("".join(texts) if texts or not calls else None, calls),
        "logprobs": None,
        "finish_reason": _finish(body.get("stop_reason"), json_mode),
    }
    return completion(as_str(body.get("model"), model), [choice], _usage(body.get("usage")))


def _read_blocks(content: list[Any], json_mode: bool) -> tuple[list[str], list[Json]]:
    texts: list[str] = []
    calls: list[Json] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_mode and block.get("name") == JSON_TOOL:
                texts.append(arguments)
            else:
                calls.append(_tool_call(block, arguments))
    return texts, calls


def _tool_call(block: Json, arguments: str) -> Json:
    return {
        "id": as_str(block.get("id")) or completion_id("call"),
        "type": "function",
        "function": {"name": as_str(block.get("name")), "arguments": arguments},
    }


def _finish(reason: Any, json_mode: bool) -> str:
    if json_mode and reason == "tool_use":
        return "stop"  # the forced JSON tool is the answer, not a call for the client
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def _usage(fields: Any) -> Usage | None:
    if not isinstance(fields, dict):
        return None
    inputs = token_count(fields.get("input_tokens"))
    outputs = token_count(fields.get("output_tokens"))
    if inputs is None or outputs is None:
        return None
    read = token_count(fields.get("cache_read_input_tokens")) or 0
    written = token_count(fields.get("cache_creation_input_tokens")) or 0
    # Writes for an hour ("ttl": "1h") are billed above 5-minute ones. Only a whole message and
    # message_start tell them apart; message_delta's running totals leave the split out, so the
    # start's stays (MessagesStream.usage). Without it, every write is a 5-minute one.
    lifetimes = as_obj(fields.get("cache_creation"))
    hour = token_count(lifetimes.get("ephemeral_1h_input_tokens")) or 0
    # Anthropic's input_tokens leaves out cached tokens; OpenAI's prompt_tokens includes them.
    return Usage(inputs + read + written, outputs, read, cache_write_tokens=written,
                 cache_write_1h_tokens=min(hour, written))


def error_failure(body: Json) -> UpstreamFailure:
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return UpstreamFailure(
        FailureKind.ERROR_IN_BODY,
        f"{kind or 'error'}: {error_message(body, 200)}",
        status=529 if kind == "overloaded_error" else None,
        body=body,
    )


# --- streaming -----------------------------------------------------------------------------


def _event_json(data: bytes) -> Json:
    value = event_json(data)
    if not isinstance(value, dict):
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "stream event is not a JSON object")
    return value


@dataclass(slots=True)
class MessagesStream:
    """Translation state of one Messages API event stream."""

    chunk_id: str
    created: int
    model: str
    json_mode: bool
    tool_index: dict[int, int] = field(default_factory=dict)
    json_blocks: set[int] = field(default_factory=set)
    # Tool blocks whose input has had a non-empty fragment: a parameterless tool's only
    # fragment is "", and its arguments must still reach the client as the JSON "{}".
    with_input: set[int] = field(default_factory=set)
    usage: Json = field(default_factory=dict)
    started: bool = False
    stopped: bool = False

    def feed(self, event: Json) -> list[Json]:
        kind = event.get("type")
        if kind == "error":
            raise error_failure(event)
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        # ping and event types added later carry nothing to translate.
        return handler(self, event) if handler else []

    def _chunk(self, delta: Json, finish_reason: str | None = None) -> Json:
        return chunk(self.chunk_id, self.model, self.created, delta, finish_reason)

    def _message_start(self, event: Json) -> list[Json]:
        message = as_obj(event.get("message"))
        self.usage.update(as_obj(message.get("usage")))
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        self.started = True
        first = self._chunk({"role": "assistant", "content": ""})
        if (usage := _usage(self.usage)) is not None:
            first[USAGE_SO_FAR] = usage
        return [first]

    def _block_start(self, event: Json) -> list[Json]:
        block, index = as_obj(event.get("content_block")), as_index(event.get("index"))
        if block.get("type") == "text" and (text := as_str(block.get("text"))):
            return [self._chunk({"content": text})]
        if block.get("type") != "tool_use":
            return []
        if self.json_mode and block.get("name") == JSON_TOOL:
            self.json_blocks.add(index)
            return []
        position = self.tool_index[index] = len(self.tool_index)
        call = _tool_call(block, "")
        return [self._chunk({"tool_calls": [{"index": position, **call}]})]

    def _block_delta(self, event: Json) -> list[Json]:
        delta, index = as_obj(event.get("delta")), as_index(event.get("index"))
        if delta.get("type") == "text_delta" and (text := as_str(delta.get("text"))):
            return [self._chunk({"content": text})]
        partial = as_str(delta.get("partial_json")) if delta.get("type") == "input_json_delta" \
            else None
        if not partial:
            return []  # thinking, signatures, citations and empty fragments
        self.with_input.add(index)
        return self._input(index, partial)

    def _block_stop(self, event: Json) -> list[Json]:
        index = as_index(event.get("index"))
        return [] if index in self.with_input else self._input(index, "{}")

    def _input(self, index: int, partial: str) -> list[Json]:
        """A fragment of a tool block's input JSON: content in JSON mode, else arguments."""
        if index in self.json_blocks:
            return [self._chunk({"content": partial})]
        if index not in self.tool_index:
            return []
        arguments = {"index": self.tool_index[index], "function": {"arguments": partial}}
        return [self._chunk({"tool_calls": [arguments]})]

    def _message_delta(self, event: Json) -> list[Json]:
        # message_delta's usage holds running totals, so it replaces message_start's counts
        # (all but the split of cache writes by lifetime, which it does not repeat). Its input
        # counts may be null (the SDK types them optional): a null leaves the start's count.
        self.usage.update((k, v) for k, v in as_obj(event.get("usage")).items() if v is not None)
        reason = as_obj(event.get("delta")).get("stop_reason")
        return [self._chunk({}, _finish(reason, self.json_mode))] if reason else []

    def _message_stop(self, event: Json) -> list[Json]:
        self.stopped = True
        return []

    def finish(self) -> list[Json]:
        """The closing usage chunk; raises when the stream ended before ``message_stop``."""
        if not self.started:
            raise UpstreamFailure(FailureKind.EMPTY_STREAM, "Anthropic stream ended empty")
        if not self.stopped:
            raise UpstreamFailure(FailureKind.CONNECT, "Anthropic stream ended before its end")
        usage = _usage(self.usage)
        return [usage_chunk(self.chunk_id, self.model, self.created, usage)] if usage else []


_HANDLERS: dict[str, Callable[[MessagesStream, Json], list[Json]]] = {
    "message_start": MessagesStream._message_start,
    "content_block_start": MessagesStream._block_start,
    "content_block_delta": MessagesStream._block_delta,
    "content_block_stop": MessagesStream._block_stop,
    "message_delta": MessagesStream._message_delta,
    "message_stop": MessagesStream._message_stop,
}
"""Each Messages event type's translation, built once rather than for every event."""


class MessagesChunks:
    """Messages events as OpenAI chunks (each carrying its event when the client speaks
    Messages too); the body's end closes the answer."""

    __slots__ = ("native", "state")

    def __init__(self, state: MessagesStream, native: bool) -> None:
        self.state = state
        self.native = native

    def event(self, event: SseEvent) -> list[Json]:
        upstream_event = _event_json(event.data)
        chunks = self.state.feed(upstream_event)
        return _carrying(chunks, upstream_event) if self.native else chunks

    def end(self) -> list[Json]:
        return self.state.finish()


def _carrying(chunks: list[Json], event: Json) -> list[Json]:
    """``chunks`` with ``event`` attached to the first (or to an empty chunk of its own)."""
    if not chunks:
        return [{"object": "chat.completion.chunk", "choices": [], NATIVE_EVENTS: [event]}]
    return [{**chunks[0], NATIVE_EVENTS: [event]}, *chunks[1:]]
