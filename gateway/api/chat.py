"""``POST /v1/chat/completions``: the path of one chat request through the gateway.

parse → choose candidates → call upstream with failover → answer (JSON or SSE) with headers that
say what happened. Each stage lives in its own module; this one only sequences them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson
from aiohttp import web

from gateway.appkeys import CATALOG, FAILOVER, SETTINGS
from gateway.catalog import AUTO
from gateway.chat import ChatRequest, parse_chat_request
from gateway.errors import BodyTooLarge, UpstreamFailure
from gateway.failover import Attempt, Stream
from gateway.providers.base import Deployment, Json, Usage, usage_from_openai
from gateway.requestctx import REQUEST_ID
from gateway.sse import DONE, encode_data
from gateway.timing import Timing

log = logging.getLogger(__name__)


async def read_body(request: web.Request) -> bytes:
    """The whole body, refusing more than the configured maximum with a 413."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def candidates_for(request: web.Request, chat: ChatRequest) -> list[Deployment]:
    catalog = request.app[CATALOG]
    if chat.model == AUTO:
        return catalog.tier("cheap") or list(catalog.deployments)
    return catalog.named(chat.model)


def answer_headers(
    request: web.Request, deployment: Deployment, attempts: Sequence[Attempt], timing: Timing
) -> dict[str, str]:
    return {
        "x-request-id": request[REQUEST_ID],
        "x-gateway-provider": deployment.provider.name,
        "x-gateway-deployment": deployment.id,
        "x-gateway-model": deployment.model.name,
        "x-gateway-tier": deployment.tier,
        "x-gateway-attempts": str(len(attempts)),
        "Server-Timing": timing.header(),
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    timing = Timing()
    chat = parse_chat_request(await read_body(request))
    timing.mark("parse")
    candidates = candidates_for(request, chat)
    timing.mark("route")
    if chat.stream:
        return await _stream(request, chat, candidates, timing)
    answer = await request.app[FAILOVER].complete(chat, candidates)
    timing.add("upstream", answer.upstream_ms)
    return web.Response(
        body=orjson.dumps(answer.completion.body),
        content_type="application/json",
        headers=answer_headers(request, answer.deployment, answer.attempts, timing),
    )


async def _stream(
    request: web.Request, chat: ChatRequest, candidates: Sequence[Deployment], timing: Timing
) -> web.StreamResponse:
    stream = await request.app[FAILOVER].open_stream(chat, candidates)
    try:
        timing.add("upstream", stream.first_byte_ms)
        resp = web.StreamResponse(
            headers={
                **answer_headers(request, stream.deployment, stream.attempts, timing),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )
        await resp.prepare(request)
        await relay(resp, stream, chat.include_usage, timing)
        return resp
    finally:
        await stream.tail.aclose()


async def relay(
    resp: web.StreamResponse, stream: Stream, include_usage: bool, timing: Timing
) -> Usage | None:
    """Write the stream to the client; a break after the first byte ends in an error event."""
    usage: Usage | None = None
    try:
        for chunk in stream.head:
            usage = await _write_chunk(resp, chunk, include_usage) or usage
        async for chunk in stream.tail:
            usage = await _write_chunk(resp, chunk, include_usage) or usage
    except UpstreamFailure as failure:
        log.warning("stream from %s broke: %s", stream.deployment.id, failure.message)
        stream.health.record_failure(failure, time.monotonic())
        await resp.write(encode_data(orjson.dumps(_stream_error(failure))))
        return usage
    stream.health.record_success(timing.elapsed_ms(), stream.first_byte_ms)
    await resp.write(DONE)
    return usage


async def _write_chunk(resp: web.StreamResponse, chunk: Json, include_usage: bool) -> Usage | None:
    usage = usage_from_openai(chunk.get("usage"))
    if usage is not None and not include_usage:
        if not chunk.get("choices"):
            return usage
        chunk = {k: v for k, v in chunk.items() if k != "usage"}
    await resp.write(encode_data(orjson.dumps(chunk)))
    return usage


def _stream_error(failure: UpstreamFailure) -> Json:
    """OpenAI's in-stream error event: never a clean end that looks like a whole answer."""
    return {
        "error": {
            "message": f"The upstream stream broke after it had started: {failure.message}",
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        }
    }

