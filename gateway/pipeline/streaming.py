"""Writing answers to the client as server-sent events: relayed from upstream, or replayed.

A relayed stream passes each chunk on as it arrives; a usage chunk goes to the client only when
it asked for one (``stream_options.include_usage``). If the upstream breaks after the first byte,
the client gets OpenAI's in-stream error event and no ``[DONE]``: never a clean end that looks
like a complete answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import orjson
from aiohttp import web

from gateway.core.answer import Json, Usage, usage_from_openai
from gateway.core.errors import UpstreamFailure
from gateway.pipeline.request_record import RequestRecord
from gateway.upstream.failover import Stream
from gateway.upstream.sse import DONE, encode_data

log = logging.getLogger(__name__)


async def relay(
    resp: web.StreamResponse, stream: Stream, include_usage: bool, record: RequestRecord,
    keep: list[Json] | None = None,
) -> bool:
    """Write the stream to the client; True when it finished whole. ``keep`` collects chunks."""
    try:
        for chunk in stream.head:
            await _write_chunk(resp, chunk, include_usage, record, keep)
        async for chunk in stream.tail:
            await _write_chunk(resp, chunk, include_usage, record, keep)
    except UpstreamFailure as failure:
        log.warning("stream from %s broke: %s", stream.deployment.id, failure.message)
        stream.health.record_failure(failure, time.monotonic())
        record.status = 502
        await resp.write(encode_data(orjson.dumps(_stream_error(failure))))
        return False
    except ConnectionResetError:  # before ``Exception``; cancellation is handled below
        stream.health.release_probe()  # the client left: no verdict on the deployment
        raise
    except Exception:
        # Headers are sent: the error can only be told in the stream, never as a 500 page.
        log.exception("relaying the stream from %s failed", stream.deployment.id)
        stream.health.release_probe()
        record.status, record.error = 500, "internal_error"
        await resp.write(encode_data(orjson.dumps(_stream_error(None))))
        return False
    except BaseException:
        stream.health.release_probe()  # the client left: no verdict on the deployment
        raise
    stream.health.record_success(record.timing.elapsed_ms(), stream.first_byte_ms)
    await resp.write(DONE)
    return True


async def replay(resp: web.StreamResponse, chunks: Iterable[Json]) -> None:
    """Write prepared chunks (a cache hit) and the end of the stream."""
    await resp.write(b"".join(encode_data(orjson.dumps(c)) for c in chunks) + DONE)


async def _write_chunk(
    resp: web.StreamResponse, chunk: Json, include_usage: bool, record: RequestRecord,
    keep: list[Json] | None,
) -> None:
    if keep is not None:
        keep.append(chunk)
    usage: Usage | None = usage_from_openai(chunk.get("usage"))
    if usage is not None:
        record.usage = usage
        if not include_usage:
            if not chunk.get("choices"):
                return
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            record.streamed_text.append(content)
    await resp.write(encode_data(orjson.dumps(chunk)))


def _stream_error(failure: UpstreamFailure | None) -> Json:
    """OpenAI's in-stream error event, for an upstream that broke or the gateway itself."""
    if failure is None:
        message, kind = "The gateway hit an internal error while streaming.", "api_error"
    else:
        message = f"The upstream stream broke after it had started: {failure.message}"
        kind = "upstream_error"
    return {"error": {"message": message, "type": kind, "param": None,
                      "code": "stream_interrupted"}}
