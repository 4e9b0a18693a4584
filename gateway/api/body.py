"""Reading a request body within the configured size limit (413 beyond it) and time (408),
decoded from its ``Content-Encoding`` here rather than by aiohttp.

aiohttp's own decoding is off (``create_app``): a body that did not decode broke its parser
part-way, so every answer, even a 401 sent before the body was read, was followed by an
unhandled exception in the log and a dropped connection. Here ``gzip`` and ``deflate`` are
decoded with the limit counting decoded bytes (a small bomb is a 413), and a body that is not
what its header says is a 400; other encodings are a 415.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from gateway.api.connections import CONNECTION_GUARD
from gateway.core.appkeys import SETTINGS
from gateway.core.errors import BodyTooLarge, InvalidRequest, RequestTimeout, UnsupportedMediaType

_DECODED = frozenset({"gzip", "x-gzip", "deflate"})
_AS_IS = frozenset({"", "identity"})
_ZLIB_ANY_HEADER = 47  # zlib's wbits for "gzip or zlib, told apart by the header"


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded, within ``server.body_timeout_s`` (408, and the connection
    closes) and ``server.max_body_bytes`` (413)."""
    timeout_s = request.app[SETTINGS].server.body_timeout_s
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _DECODED and encoding not in _AS_IS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not supported: send gzip, deflate or "
            "identity.", code="unsupported_content_encoding")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await _read_within_limit(request)
    except TimeoutError:
        if (guard := request.app.get(CONNECTION_GUARD)) is not None:
            guard.closed("body_timeout")
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None
    if encoding in _DECODED and raw:
        return _decoded(raw, encoding, request.app[SETTINGS].server.max_body_bytes)
    return raw


async def _read_within_limit(request: web.Request) -> bytes:
    """The whole body, refusing more than ``server.max_body_bytes`` with a 413."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    expected = request.content_length
    while (expected is None or size < expected) and (
        chunk := await request.content.read(limit + 1 - size)
    ):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _decoded(raw: bytes, encoding: str, limit: int) -> bytes:
    """``raw`` decoded from gzip or deflate, never more than ``limit`` bytes of it."""
    decoder = zlib.decompressobj(wbits=_ZLIB_ANY_HEADER)
    try:
        body = decoder.decompress(raw, limit + 1)
    except zlib.error:
        body = b""
    else:
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes once decoded.")
        if decoder.eof:
            return body
    raise InvalidRequest(f"The request body is not valid {encoding} data.",
                         code="undecodable_body")
