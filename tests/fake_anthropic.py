"""An in-process fake of Anthropic's Messages API, for tests of the Anthropic adapter.

``fake_anthropic_app(fake)`` serves ``POST /v1/messages`` in Anthropic's wire format: a
``message`` object, or, when the body says ``"stream": true``, the event stream with ``event:``
and ``data:`` lines (message_start, content_block_start/delta/stop, ping, message_delta,
message_stop, error). Tests script the next answers (``fake.script``; ``fake.default`` after
that) with the builders below and assert on what the fake was sent (``fake.requests``).
A wrong ``x-api-key`` gets Anthropic's 401, a missing or unknown ``anthropic-version`` its 400
(the versions known: the gateway's own and the installed ``anthropic`` SDK's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from anthropic._constants import ANTHROPIC_API_VERSION

from tests import fake_provider
from tests.fake_provider import json_response, write_stream

Json = dict[str, Any]
Event = tuple[str, Json]
Answer = fake_provider.Answer[Event]


@dataclass(frozen=True)
class Received:
    headers: Mapping[str, str]
    body: Json


class FakeAnthropic(fake_provider.Scripted[Event, Received]):
    def __init__(self, api_key: str = "test-anthropic-key") -> None:
        super().__init__(api_key, text("Hello from the fake."))


FAKE = web.AppKey("fake_anthropic", FakeAnthropic)
API_VERSIONS = frozenset({"2023-06-01", ANTHROPIC_API_VERSION})


def fake_anthropic_app(fake: FakeAnthropic) -> web.Application:
    app = web.Application()
    app[FAKE] = fake
    app.router.add_post("/v1/messages", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    body = await request.json(loads=orjson.loads)
    fake.requests.append(Received(dict(request.headers), body))
    if request.headers.get("x-api-key") != fake.api_key:
        return json_response(error_body("authentication_error", "invalid x-api-key"), 401)
    if request.headers.get("anthropic-version") not in API_VERSIONS:
        return json_response(
            error_body("invalid_request_error", "anthropic-version: required"), 400
        )
    answer = fake.next_answer()
    if answer.status != 200:
        return json_response(answer.body, answer.status, answer.headers)
    if body.get("stream") is True:
        return await _stream(request, answer)
    return json_response(answer.body, 200)


async def _stream(request: web.Request, answer: Answer) -> web.StreamResponse:
    frames = [f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
              for name, data in answer.events]
    return await write_stream(request, answer, frames, "text/event-stream; charset=utf-8")


# --- answers -------------------------------------------------------------------------------


def _message(content: list[Json], stop_reason: str, usage: Json) -> Json:
    return {
        "id": "msg_fake01", "type": "message", "role": "assistant",
        "model": "claude-fake-1", "content": content, "stop_reason": stop_reason,
        "stop_sequence": None, "usage": usage,
    }


def usage(inputs: int = 9, outputs: int = 6, *, cache_read: int = 0, cache_write: int = 0,
          cache_write_1h: int = 0) -> Json:
    """A usage object; with 1-hour writes (some of ``cache_write``), the split by lifetime that
    Anthropic sends in a whole message and in ``message_start``."""
    out: Json = {"input_tokens": inputs, "output_tokens": outputs,
                 "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read}
    if cache_write_1h:
        out["cache_creation"] = {"ephemeral_5m_input_tokens": cache_write - cache_write_1h,
                                 "ephemeral_1h_input_tokens": cache_write_1h}
    return out


def _events(blocks: list[list[Event]], stop_reason: str, use: Json,
            delta_totals: bool = False) -> list[Event]:
    start = _message([], "", {**use, "output_tokens": 1})
    start["stop_reason"] = None
    events: list[Event] = [("message_start", {"type": "message_start", "message": start}),
                           ("ping", {"type": "ping"})]
    for block in blocks:
        events.extend(block)
    totals = {k: v for k, v in use.items() if k != "cache_creation"}
    events.append(("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": totals if delta_totals else {"output_tokens": use["output_tokens"]},
    }))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _text_block(index: int, pieces: Sequence[str]) -> list[Event]:
    events: list[Event] = [("content_block_start", {
        "type": "content_block_start", "index": index,
        "content_block": {"type": "text", "text": ""},
    })]
    events.extend(("content_block_delta", {
        "type": "content_block_delta", "index": index,
        "delta": {"type": "text_delta", "text": piece},
    }) for piece in pieces)
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _tool_block(index: int, block: Json, json_pieces: Sequence[str]) -> list[Event]:
    events: list[Event] = [("content_block_start", {
        "type": "content_block_start", "index": index,
        "content_block": {**block, "input": {}},
    })]
    events.extend(("content_block_delta", {
        "type": "content_block_delta", "index": index,
        "delta": {"type": "input_json_delta", "partial_json": piece},
    }) for piece in ["", *json_pieces])
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def text(
    content: str,
    *,
    chunks: Sequence[str] | None = None,
    stop_reason: str = "end_turn",
    use: Json | None = None,
    cut_after: int | None = None,
    end_after: int | None = None,
    delta_totals: bool = False,
) -> Answer:
    """A text answer; streamed in ``chunks`` (by default, word by word). Its ``message_delta``
    tells the output tokens only, as Anthropic's older streams do, or with ``delta_totals``
    every running total but the split of cache writes by lifetime, as its newer ones do
    (``provider_recordings/anth_stream_text.sse``)."""
    use = use or usage()
    words = content.split(" ")
    pieces = chunks or [w if i == 0 else " " + w for i, w in enumerate(words)]
    body = _message([{"type": "text", "text": content}], stop_reason, use)
    events = _events([_text_block(0, pieces)], stop_reason, use, delta_totals)
    return Answer(body, events, cut_after=cut_after, end_after=end_after)


def tool_use(
    calls: Sequence[tuple[str, Json]], *, lead_text: str = "", stop_reason: str = "tool_use"
) -> Answer:
    """An answer calling tools, their input streamed as JSON in two fragments each."""
    use = usage(outputs=30)
    content: list[Json] = [{"type": "text", "text": lead_text}] if lead_text else []
    blocks: list[list[Event]] = [_text_block(0, [lead_text])] if lead_text else []
    for i, (name, args) in enumerate(calls):
        block = {"type": "tool_use", "id": f"toolu_fake{i}", "name": name, "input": args}
        raw = orjson.dumps(args).decode()
        blocks.append(_tool_block(len(content), block, [raw[: len(raw) // 2], raw[len(raw) // 2:]]))
        content.append(block)
    return Answer(_message(content, stop_reason, use), _events(blocks, stop_reason, use))


def error_body(kind: str, message: str) -> Json:
    return {"type": "error", "error": {"type": kind, "message": message}}


def failure(status: int, kind: str, message: str, *,
            headers: Mapping[str, str] | None = None) -> Answer:
    """An HTTP error in Anthropic's error shape (e.g. 429 rate_limit_error, 529 overloaded)."""
    return Answer(error_body(kind, message), status=status, headers=headers or {})


def error_in_stream(kind: str = "overloaded_error", message: str = "Overloaded") -> Answer:
    """A 200 stream that starts an answer, then sends an ``error`` event."""
    events = list(text("partial answer").events[:4])
    events.append(("error", error_body(kind, message)))
    return Answer(error_body(kind, message), events)
