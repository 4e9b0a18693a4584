"""An in-process fake of an OpenAI-compatible provider, speaking its exact wire format.

Non-streaming answers are ``chat.completion`` objects; streams are ``text/event-stream`` with one
``data: {chat.completion.chunk}`` event per chunk, a usage-only chunk when
``stream_options.include_usage`` is set (and then, as OpenAI does, ``"usage": null`` in every
chunk before it), and ``data: [DONE]``. A test scripts what the next
requests get (``FakeOpenAI.script``) and reads back what the provider received.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OPENAI = web.AppKey("fake_openai", "FakeOpenAI")


@dataclass
class Reply:
    """What the fake does for one request."""

    kind: str = "ok"  # ok | status | error_in_200 | hang | cut | empty | not_sse | unfinished
    # | malformed
    text: str = "Hello from the fake provider."
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks_before_cut: int = 2
    tool_call: dict[str, Any] | None = None
    finish_reason: str = "stop"
    usage: bool = True  # False: a provider that never reports usage, even when asked
    reasoning_tokens: int = 0  # of the completion tokens, hidden reasoning (o-series models)


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.rule: Callable[[dict[str, Any]], Reply | None] | None = None
        """Picks the reply from the request body (None: the script, then the default)."""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.received = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._counts: list[tuple[int, asyncio.Event]] = []

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` requests have arrived in all."""
        if len(self.requests) < count:
            event = asyncio.Event()
            self._counts.append((count, event))
            await event.wait()

    def _arrived(self) -> None:
        for count, event in self._counts:
            if len(self.requests) >= count:
                event.set()

    def next_reply(self, body: dict[str, Any] | None = None) -> Reply:
        if self.rule is not None and body is not None and (chosen := self.rule(body)):
            return chosen
        return self.script.popleft() if self.script else self.default


def _completion(model: str, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_call:
        message = {"role": "assistant", "content": None, "tool_calls": [reply.tool_call]}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if reply.tool_call else reply.finish_reason}],
        "usage": _usage(reply, len(reply.text.split())),
    }


def _usage(reply: Reply, words: int) -> dict[str, Any]:
    """Usage as OpenAI reports it; reasoning tokens count in the completion tokens."""
    completion = words + reply.reasoning_tokens
    usage: dict[str, Any] = {"prompt_tokens": 11, "completion_tokens": completion,
                             "total_tokens": 11 + completion}
    if reply.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
    return usage


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _stream(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    fake = request.app[OPENAI]
    model = body["model"]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if reply.kind == "empty":
        await resp.write(_event(_chunk(model, {"role": "assistant", "content": ""})))
        await resp.write(b"data: [DONE]\n\n")
        return resp
    words = reply.text.split(" ")
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    if reply.tool_call:
        events += _tool_call_chunks(model, reply.tool_call)
    else:
        events += [_chunk(model, {"content": w if i == 0 else " " + w})
                   for i, w in enumerate(words)]
        events.append(_chunk(model, {}, reply.finish_reason))
    if reply.kind == "malformed":
        events.insert(reply.chunks_before_cut, {**events[0], "choices": [None]})
    usage_asked = reply.usage and (body.get("stream_options") or {}).get("include_usage")
    if usage_asked:
        events = [{**e, "usage": None} for e in events]
    for i, payload in enumerate(events):
        if reply.kind == "unfinished" and i == reply.chunks_before_cut:
            return resp  # a clean end of the body: no finish_reason, no [DONE]
        if reply.kind == "cut" and i == reply.chunks_before_cut:
            assert request.transport is not None
            request.transport.close()
            return resp
        if reply.kind == "hang" and i == reply.chunks_before_cut:
            try:
                await fake.release.wait()
            finally:
                fake.disconnected.set()
        await resp.write(_event(payload))
    if usage_asked:
        usage = _usage(reply, len(words))
        await resp.write(_event({**_chunk(model, {}), "choices": [], "usage": usage}))
    await resp.write(b"data: [DONE]\n\n")
    return resp


def _tool_call_chunks(model: str, call: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool call as OpenAI streams one: id and name first, then the arguments in two."""
    arguments = call["function"]["arguments"]
    half = len(arguments) // 2
    head = {"index": 0, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    return [
        _chunk(model, {"tool_calls": [head]}),
        _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
        _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        _chunk(model, {}, "tool_calls"),
    ]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    fake = request.app[OPENAI]
    body = await request.json()
    fake.requests.append(body)
    fake.headers.append(dict(request.headers))
    fake.received.set()
    fake._arrived()
    reply = fake.next_reply(body)
    if reply.kind == "status":
        error = {"error": {"message": f"fake says {reply.status}", "type": "server_error",
                           "param": None, "code": None}}
        return web.json_response(error, status=reply.status, headers=reply.headers)
    if reply.kind == "error_in_200":
        return web.json_response({"error": {"message": "overloaded", "type": "server_error"}})
    if reply.kind == "hang" and not body.get("stream"):
        try:
            await fake.release.wait()
        finally:
            fake.disconnected.set()
    if body.get("stream"):
        if reply.kind == "not_sse":
            return web.json_response({"error": {"message": "no streams today"}})
        return await _stream(request, body, reply)
    return web.json_response(_completion(body["model"], reply))


def fake_openai_app(fake: FakeOpenAI) -> web.Application:
    app = web.Application()
    app[OPENAI] = fake
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app
