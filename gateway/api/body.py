"""Reading a request body within the configured size limit (413 beyond it) and time (408)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.api.connections import CONNECTION_GUARD
from gateway.core.appkeys import SETTINGS
from gateway.core.errors import BodyTooLarge, RequestTimeout


async def read_body(request: web.Request) -> bytes:
    """The whole body within ``server.body_timeout_s`` (408, and the connection closes)."""
    timeout_s = request.app[SETTINGS].server.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_within_limit(request)
    except TimeoutError:
        if (guard := request.app.get(CONNECTION_GUARD)) is not None:
            guard.closed("body_timeout")
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None


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
