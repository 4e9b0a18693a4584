"""The gateway's answers in the Responses API's format: response objects and event streams.

``Shape`` holds what every response object of one request repeats (id, creation time, the
request's echoed parameters). ``response_object`` turns a ``chat.completion`` into a
``response`` with ``message`` and ``function_call`` output items; ``ResponseEvents`` turns
``chat.completion.chunk``s into the Responses event sequence: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``/``.done``, ``response.function_call_arguments.delta``/``.done``,
``response.content_part.done``, ``response.output_item.done``, then ``response.completed`` (or
``response.incomplete``) with usage; every event numbered by ``sequence_number``. A stream that
breaks after its first byte ends with an ``error`` event and ``response.failed``.
``output_messages`` reads output items back as chat messages (for the store). Pure: no I/O.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.api.call_ids import outward_id
from gateway.core.answer import Json, as_index, as_list, as_obj, as_str, usage_from_openai
from gateway.core.errors import UpstreamFailure

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class Shape:
    """The parts of a response object fixed when the request arrives."""

    id: str
    created_at: int
    echo: Json
    """The request's parameters a response object repeats (instructions, tools, …)."""

    @classmethod
    def of(cls, body: Json) -> Shape:
        fmt = as_obj(as_obj(body.get("text")).get("format")) or {"type": "text"}
        echo = {
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature"),
            "text": {"format": fmt},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "truncation": body.get("truncation") or "disabled",
            "user": body.get("user"),
        }
        return cls(new_id("resp"), int(time.time()), echo)

    def response(self, model: str, status: str, output: list[Json], usage: Any = None,
                 finish: str | None = None) -> Json:
        reason = _INCOMPLETE.get(finish or "")
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": "incomplete" if status == "completed" and reason else status,
            "background": False, "error": None,
            "incomplete_details": {"reason": reason} if reason else None,
            "model": model, "output": output, **self.echo,
            "usage": usage_body(usage) if usage is not None else None,
        }


def usage_body(openai_usage: Any) -> Json | None:
    usage = usage_from_openai(openai_usage)
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": usage.cache_write_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def message_item(item_id: str, text: str, status: str = "completed") -> Json:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [part] if status == "completed" else []}


def call_item(item_id: str, call_id: str, name: str, arguments: str,
              status: str = "completed") -> Json:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def response_object(shape: Shape, body: Json) -> Json:
    """A ``chat.completion`` as a ``response`` object."""
    choice = as_obj((body.get("choices") or [{}])[0])
    message = as_obj(choice.get("message"))
    output: list[Json] = []
    if text := as_str(message.get("content")):
        output.append(message_item(new_id("msg"), text))
    for call in as_list(message.get("tool_calls")):
        function = as_obj(as_obj(call).get("function"))
        output.append(call_item(new_id("fc"), outward_id(call) or new_id("call"),
                                as_str(function.get("name")), as_str(function.get("arguments"))))
    return shape.response(as_str(body.get("model")), "completed", output, body.get("usage"),
                          as_str(choice.get("finish_reason")))


def output_messages(response: Json) -> list[Json]:
    """A response's output items as the chat messages a follow-up request continues from."""
    text = "".join(p.get("text", "") for item in response.get("output") or ()
                   if item.get("type") == "message" for p in item.get("content") or ())
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in response.get("output") or () if item.get("type") == "function_call"]
    message: Json = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


def event(kind: str, payload: Json) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True)
class _Call:
    index: int
    """Its output index."""
    item: Json


@dataclass(slots=True)
class ResponseEvents:
    """A ``ChunkWriter``: OpenAI chunks in, Responses API events out."""

    shape: Shape
    sequence: int = 0
    model: str = ""
    output: list[Json] = field(default_factory=list)
    text: list[str] | None = None
    """The open message item's text so far (None: no message item is open)."""
    calls: dict[int, _Call] = field(default_factory=dict)
    open_call: _Call | None = None
    finish: str | None = None
    usage: Any = None
    final: Json | None = None
    tail: bytes = b""
    """The ``done`` events of the items still open when the answer completed."""

    def _event(self, kind: str, **payload: Any) -> bytes:
        self.sequence += 1
        return event(kind, {"type": kind, **payload, "sequence_number": self.sequence - 1})

    def chunk(self, chunk: Json) -> bytes:
        out = b""
        if not self.sequence:
            self.model = as_str(chunk.get("model"))
            snapshot = self.shape.response(self.model, "in_progress", [])
            out = (self._event("response.created", response=snapshot)
                   + self._event("response.in_progress", response=snapshot))
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = as_obj(choice.get("delta"))
            if text := as_str(delta.get("content")):
                out += self._text(text)
            for call in as_list(delta.get("tool_calls")):
                out += self._call(as_obj(call))
            self.finish = as_str(choice.get("finish_reason")) or self.finish
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        if self.text is None:
            out = self._close()
            item = message_item(new_id("msg"), "", "in_progress")
            self.output.append(item)
            self.text = []
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.output_item.added", output_index=len(self.output) - 1,
                               item=item)
            out += self._event("response.content_part.added", item_id=item["id"],
                               output_index=len(self.output) - 1, content_index=0, part=part)
        self.text.append(text)
        return out + self._event("response.output_text.delta", item_id=self.output[-1]["id"],
                                 output_index=len(self.output) - 1, content_index=0,
                                 delta=text, logprobs=[])

    def _call(self, call: Json) -> bytes:
        position = as_index(call.get("index"))
        function = as_obj(call.get("function"))
        out = b""
        if position not in self.calls:
            out = self._close()
            item = call_item(new_id("fc"), outward_id(call) or new_id("call"),
                             as_str(function.get("name")), "", "in_progress")
            self.output.append(item)
            self.open_call = self.calls[position] = _Call(len(self.output) - 1, item)
            out += self._event("response.output_item.added", output_index=len(self.output) - 1,
                               item=item)
        entry = self.calls[position]
        if not (arguments := as_str(function.get("arguments"))):
            return out
        entry.item["arguments"] += arguments
        return out + self._event("response.function_call_arguments.delta",
                                 item_id=entry.item["id"], output_index=entry.index,
                                 delta=arguments)

    def _close(self) -> bytes:
        """Finish the open output item, if any, with its ``done`` events."""
        if self.text is not None:
            index, text = len(self.output) - 1, "".join(self.text)
            item = self.output[index] = message_item(self.output[index]["id"], text)
            self.text = None
            part = item["content"][0]
            return (self._event("response.output_text.done", item_id=item["id"],
                                output_index=index, content_index=0, text=text, logprobs=[])
                    + self._event("response.content_part.done", item_id=item["id"],
                                  output_index=index, content_index=0, part=part)
                    + self._event("response.output_item.done", output_index=index, item=item))
        if self.open_call is not None:
            call, self.open_call = self.open_call, None
            call.item["status"] = "completed"
            return (self._event("response.function_call_arguments.done",
                                item_id=call.item["id"], output_index=call.index,
                                name=call.item["name"], arguments=call.item["arguments"])
                    + self._event("response.output_item.done", output_index=call.index,
                                  item=call.item))
        return b""

    def complete(self) -> Json:
        """The final response object (closing open items); kept for the store."""
        if self.final is None:
            self.tail = self._close()
            self.final = self.shape.response(self.model, "completed", self.output, self.usage,
                                             self.finish)
        return self.final

    def end(self) -> bytes:
        final = self.complete()
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return self.tail + self._event(kind, response=final)

    def error(self, failure: UpstreamFailure | None) -> bytes:
        message = ("The gateway hit an internal error while streaming." if failure is None else
                   f"The upstream stream broke after it had started: {failure.message}")
        failed = self.shape.response(self.model, "failed", self.output, self.usage)
        failed["error"] = {"code": "server_error", "message": message}
        return (self._event("error", code="stream_interrupted", message=message, param=None)
                + self._event("response.failed", response=failed))
