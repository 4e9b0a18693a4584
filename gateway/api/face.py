"""What a client dialect must provide to ride the one request path (``gateway.api.chat.serve``).

Inside the gateway every answer is an OpenAI ``chat.completion`` (or its chunks); a ``Face`` turns
it into the client's dialect on the way out: the body of a whole answer, a ``ChunkWriter`` for a
stream, extra headers, and ``finish``, awaited after the answer is known and before its last
bytes are sent (the Responses API stores the response there, so a follow-up request that names
it can never arrive first). ``ChatFace`` is chat completions itself: the answer as it is.
"""

from __future__ import annotations

from typing import Protocol

from gateway.core.answer import Json
from gateway.pipeline.streaming import ChunkWriter, OpenAIChunks


class Face(Protocol):
    api: str
    """``chat``, ``messages`` or ``responses``: the ledger's and access log's ``api``."""

    def answer(self, body: Json, native: Json | None) -> Json:
        """A whole ``chat.completion`` (and the provider's own answer, if native) → the client's."""
        ...

    def writer(self) -> ChunkWriter:
        """The stream writer for this request (it may keep what it wrote, for ``finish``)."""
        ...

    def headers(self, limit_headers: dict[str, str]) -> dict[str, str]:
        """Headers of the dialect's own beside the gateway's (rate limits in its names)."""
        ...

    async def finish(self) -> None:
        """Called once the whole answer is known, before its last bytes go out."""
        ...


class ChatFace:
    """Chat completions: the answer and its chunks go out as they are."""

    api = "chat"
    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def answer(self, body: Json, native: Json | None) -> Json:
        return body

    def writer(self) -> ChunkWriter:
        return OpenAIChunks(self.include_usage)

    def headers(self, limit_headers: dict[str, str]) -> dict[str, str]:
        return {}

    async def finish(self) -> None:
        return None
