"""Provider calls over the shared ``HttpClient``, with explicit per-phase timeouts, streaming.

Phases and their timeouts: connecting (``connect_timeout_s``), waiting for the response
headers (``first_byte_timeout_s``), and waiting for each next piece of the body
(``chunk_timeout_s``). There is no total timeout: a long stream that keeps moving is fine.
Every client error is translated here into an ``UpstreamFailure``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from gateway.core import json_depth
from gateway.core.config import Timeouts
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.attempt_trace import NO_TRACING, AttemptTracer
from gateway.upstream.http_client import HttpClient
from gateway.upstream.http_response import HttpError, HttpTimeout, Response
from gateway.upstream.sse import SseEvent, iter_sse

log = logging.getLogger(__name__)

# 401/403/404 from a provider mean this deployment is misconfigured (key, model id): another
# deployment may still serve the request. Other 4xx mean the request itself is refused.
_DEPLOYMENT_STATUSES = frozenset({401, 403, 404, 408, 409})
MAX_ANSWER_BYTES = 64 << 20
"""Far beyond any whole answer; past it, a body that never ends is a bad response, not a
buffer that grows until the process runs out of memory."""
_MAX_ERROR_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class JsonResponse:
    status: int
    body: Any


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: Any, status: int) -> str:
    """The provider's own words from an error body in OpenAI, Gemini or Anthropic shape."""
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return f"upstream answered HTTP {status}"


def failure_for_status(status: int, headers: Mapping[str, str], body: Any) -> UpstreamFailure:
    message = f"HTTP {status}: {error_message(body, status)}"
    if status == 429:
        kind = FailureKind.RATE_LIMITED
    elif status >= 500 or status in _DEPLOYMENT_STATUSES:
        kind = FailureKind.SERVER_ERROR
    else:
        kind = FailureKind.CLIENT_ERROR
    parsed = body if isinstance(body, dict) else None
    return UpstreamFailure(
        kind, message, status=status, retry_after_s=retry_after_s(headers), body=parsed
    )


def _parse_json(raw: bytes) -> Any:
    try:
        return json_depth.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


class Upstream:
    """Requests to providers over the shared client, with failures translated."""

    def __init__(self, session: HttpClient) -> None:
        self.session = session
        self.tracer: AttemptTracer = NO_TRACING
        """Adds the trace context to each call; the tracing context sets it when configured."""

    async def post_json(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeouts: Timeouts
    ) -> JsonResponse:
        """POST and read a whole JSON answer; non-2xx becomes ``UpstreamFailure``."""
        resp = await self._send(url, headers, body, timeouts)
        try:
            raw = await _read_up_to(resp, timeouts, MAX_ANSWER_BYTES)
        except HttpTimeout as exc:
            raise UpstreamFailure(FailureKind.TIMEOUT, "response body stalled") from exc
        except HttpError as exc:
            raise UpstreamFailure(FailureKind.CONNECT, f"body read failed: {exc}") from exc
        finally:
            resp.release()
        if len(raw) > MAX_ANSWER_BYTES:
            raise UpstreamFailure(FailureKind.BAD_RESPONSE,
                                  f"answer larger than {MAX_ANSWER_BYTES} bytes")
        parsed = _parse_json(raw)
        if resp.status >= 300:
            raise failure_for_status(resp.status, resp.headers, parsed)
        if parsed is None:
            raise UpstreamFailure(FailureKind.BAD_RESPONSE, "response is not JSON")
        return JsonResponse(resp.status, parsed)

    @asynccontextmanager
    async def open_sse(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeouts: Timeouts
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """POST and yield the answer's SSE events; released when the block exits."""
        resp = await self.open_event_stream(url, headers=headers, body=body, timeouts=timeouts)
        try:
            yield iter_sse(resp, timeouts.chunk_timeout_s)
        finally:
            # A body read to its end returns the connection to the pool; a stream abandoned
            # part-way (client gone, failover) closes it so no stale bytes are reused.
            resp.release()

    async def open_event_stream(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeouts: Timeouts
    ) -> Response:
        """POST and return the response once it is known to be an event stream (its body
        unread; the caller releases it); any other answer is an ``UpstreamFailure``."""
        resp = await self._send(url, headers, body, timeouts)
        try:
            if resp.status >= 300:
                raw = await _read_error_body(resp, timeouts)
                raise failure_for_status(resp.status, resp.headers, _parse_json(raw))
            ctype = resp.headers.get("Content-Type") or ""
            if "text/event-stream" not in ctype:
                raw = await _read_error_body(resp, timeouts)
                parsed = _parse_json(raw)
                raise UpstreamFailure(
                    FailureKind.ERROR_IN_BODY if parsed else FailureKind.BAD_RESPONSE,
                    f"expected an event stream, got {ctype or 'no content type'}: "
                    + error_message(parsed, resp.status),
                )
        except BaseException:
            resp.release()
            raise
        return resp

    async def _send(
        self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts
    ) -> Response:
        try:
            return await self.session.request(
                "POST", url, headers=self.tracer.inject(headers), body=body,
                connect_timeout_s=timeouts.connect_timeout_s,
                first_byte_timeout_s=timeouts.first_byte_timeout_s,
            )
        except HttpTimeout as exc:
            raise UpstreamFailure(FailureKind.TIMEOUT, f"no response in time: {exc}") from exc
        except HttpError as exc:
            raise UpstreamFailure(FailureKind.CONNECT, f"connection failed: {exc}") from exc


async def _read_up_to(resp: Response, timeouts: Timeouts, limit: int) -> bytes:
    """The body, or its first bytes once it is past ``limit`` bytes (left unread after them)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit and (data := await resp.readany(timeouts.chunk_timeout_s)):
        parts.append(data)
        size += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _read_error_body(resp: Response, timeouts: Timeouts) -> bytes:
    try:
        return (await _read_up_to(resp, timeouts, _MAX_ERROR_BYTES))[:_MAX_ERROR_BYTES]
    except HttpError:
        return b""
