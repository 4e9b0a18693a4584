"""An in-process fake of the Gemini API, for tests of the Gemini adapter.

``fake_gemini_app(fake)`` serves ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse`` in Google's wire format: a ``GenerateContentResponse`` as the
body, or one per ``data:`` event (CRLF-framed, as Google frames them). Tests script the next
answers (``fake.script``; ``fake.default`` after that) with the builders below, and assert on
what the fake was sent (``fake.requests``). A wrong ``x-goog-api-key`` gets Google's 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests import fake_provider
from tests.fake_provider import json_response, write_stream

Json = dict[str, Any]
Answer = fake_provider.Answer[Json]


@dataclass(frozen=True)
class Received:
    model: str
    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Json


class FakeGemini(fake_provider.Scripted[Json, Received]):
    def __init__(self, api_key: str = "test-gemini-key") -> None:
        super().__init__(api_key, text("Hello from the fake."))


FAKE = web.AppKey("fake_gemini", FakeGemini)


def fake_gemini_app(fake: FakeGemini) -> web.Application:
    app = web.Application()
    app[FAKE] = fake
    app.router.add_post("/v1beta/models/{target}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    model, _, method = request.match_info["target"].partition(":")
    body = await request.json(loads=orjson.loads)
    fake.requests.append(
        Received(model, method, dict(request.query), dict(request.headers), body)
    )
    if request.headers.get("x-goog-api-key") != fake.api_key:
        return json_response(error_body(400, "API key not valid. Please pass a valid API key.",
                                        "INVALID_ARGUMENT", reason="API_KEY_INVALID"), 400)
    answer = fake.next_answer()
    if answer.status != 200:
        return json_response(answer.body, answer.status, answer.headers)
    if method == "generateContent":
        return json_response(answer.body, 200)
    if method == "streamGenerateContent" and request.query.get("alt") == "sse":
        return await _stream(request, answer)
    return json_response(error_body(404, f"unknown method {method}", "NOT_FOUND"), 404)


async def _stream(request: web.Request, answer: Answer) -> web.StreamResponse:
    # Google frames its events with CRLF.
    frames = [b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in answer.events]
    return await write_stream(request, answer, frames, "text/event-stream")


# --- answers -------------------------------------------------------------------------------


def usage(prompt: int = 7, candidates: int = 5, **extra: int) -> Json:
    return {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + sum(extra.values()), **extra}


def _response(parts: list[Json], finish: str | None, meta: Json | None) -> Json:
    candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: Json = {"candidates": [candidate], "modelVersion": "gemini-fake-001",
                 "responseId": "fake-response-id"}
    if meta:
        out["usageMetadata"] = meta
    return out


def text(
    content: str,
    *,
    chunks: Sequence[str] | None = None,
    finish: str = "STOP",
    meta: Json | None = None,
    cut_after: int | None = None,
    end_after: int | None = None,
) -> Answer:
    """A text answer; streamed in ``chunks`` (by default, word by word)."""
    meta = meta or usage()
    pieces = list(chunks) if chunks is not None else _words(content)
    events = [
        _response([{"text": piece}], finish if i == len(pieces) - 1 else None,
                  {**meta, "candidatesTokenCount": i + 1})
        for i, piece in enumerate(pieces)
    ]
    events[-1]["usageMetadata"] = meta
    return Answer(_response([{"text": content}], finish, meta), events,
                  cut_after=cut_after, end_after=end_after)


def _words(content: str) -> list[str]:
    words = content.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def function_calls(
    calls: Sequence[tuple[str, Json]], *, lead_text: str = "", signature: str | None = None
) -> Answer:
    """An answer calling functions (parallel when several); the first part carries the
    thought signature, as Gemini 3 sends it."""
    parts: list[Json] = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
    if signature:
        parts[0]["thoughtSignature"] = signature
    if lead_text:
        parts.insert(0, {"text": lead_text})
    meta = usage(candidates=12)
    events = [_response([p], None, meta) for p in parts]
    events.append(_response([], "STOP", meta))
    return Answer(_response(parts, "STOP", meta), events)


def blocked(reason: str = "SAFETY") -> Answer:
    """A prompt Gemini refuses to answer at all."""
    body = {"promptFeedback": {"blockReason": reason}, "usageMetadata": usage(candidates=0)}
    return Answer(body, [body])


def error_body(code: int, message: str, status: str, *, reason: str | None = None,
               retry_delay: str | None = None) -> Json:
    details: list[Json] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "googleapis.com"})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": retry_delay})
    error: Json = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def failure(
    status: int, message: str, status_name: str, *, headers: Mapping[str, str] | None = None,
    reason: str | None = None, retry_delay: str | None = None,
) -> Answer:
    """An HTTP error in Google's error shape."""
    body = error_body(status, message, status_name, reason=reason, retry_delay=retry_delay)
    return Answer(body, status=status, headers=headers or {})


def error_in_stream(message: str = "Internal error encountered.") -> Answer:
    """A 200 whose stream carries an error object after the first event."""
    first = text("partial answer").events[0]
    first["candidates"][0].pop("finishReason", None)
    error = error_body(500, message, "INTERNAL")
    return Answer(error, [first, error])
