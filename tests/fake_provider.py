"""The plumbing the scripted provider fakes share (``fake_anthropic``, ``fake_gemini``).

Each fake keeps its own wire format (routes, error shapes, event framing); this module holds what
does not depend on it: the scripted ``Answer``, the queue of answers and received requests, the
JSON reply, and the event-stream writer that can cut or end a stream early.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web

Json = dict[str, Any]
Event = TypeVar("Event")
Received = TypeVar("Received")


@dataclass(frozen=True)
class Answer(Generic[Event]):
    """What a fake answers: ``body`` to a plain request, ``events`` to a stream."""

    body: Json
    events: Sequence[Event] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # streams: drop the connection after this many events
    end_after: int | None = None  # streams: end cleanly (no final event) after this many


class Scripted(Generic[Event, Received]):
    """Answers from ``script`` while it lasts, then ``default``; records what it was sent."""

    def __init__(self, api_key: str, default: Answer[Event]) -> None:
        self.api_key = api_key
        self.script: deque[Answer[Event]] = deque()
        self.default = default
        self.requests: list[Received] = []

    def next_answer(self) -> Answer[Event]:
        return self.script.popleft() if self.script else self.default


def json_response(
    body: Json, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers,
        content_type="application/json", charset="utf-8",
    )


async def write_stream(
    request: web.Request, answer: Answer[Any], frames: Sequence[bytes], content_type: str
) -> web.StreamResponse:
    """Send ``frames`` (one per event of ``answer``), honouring its ``cut_after``/``end_after``."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    await resp.prepare(request)
    for i, frame in enumerate(frames):
        if answer.cut_after == i:
            assert request.transport is not None
            request.transport.abort()
            return resp
        if answer.end_after == i:
            break
        await resp.write(frame)
    await resp.write_eof()
    return resp
