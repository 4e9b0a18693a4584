"""Reading a request body within the configured size limit (413 beyond it)."""

from __future__ import annotations

from aiohttp import web

from gateway.core.appkeys import SETTINGS
from gateway.core.errors import BodyTooLarge


async def read_body(request: web.Request) -> bytes:
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
