"""OpenAI-compatible providers (OpenAI, Groq, Together, vLLM, Ollama, LM Studio): pass-through.

The client's body goes upstream as sent, with the model name swapped for the deployment's
upstream id and, for streams, usage requested so that cost can be accounted. Errors inside a
200 (an ``error`` object in the body or in a stream event) are failures like any other.

A stream's reads that hold only plain chunks (``plain_chunks``: text on its way, nothing the
gateway must act on) may be relayed as the bytes they came in rather than encoded again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Any

import orjson

from gateway.core import json_depth
from gateway.core.answer import (
    Completion,
    Deployment,
    Json,
    event_json,
    usage_from_openai,
)
from gateway.core.chat import ChatRequest
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.calls import Upstream, error_message
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_response import Response
from gateway.upstream.providers.base import refuse_native_only
from gateway.upstream.sse import SseEvent


class OpenAIProvider:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        p = deployment.provider
        headers = {"Content-Type": "application/json", **p.headers}
        if p.api_key:
            headers["Authorization"] = f"Bearer {p.api_key}"
        return headers

    def _body(self, request: ChatRequest, deployment: Deployment, stream: bool) -> bytes:
        refuse_native_only(request)
        body: dict[str, Any] = {**request.body, "model": deployment.model.upstream_model}
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    async def complete(self, request: ChatRequest, deployment: Deployment) -> Completion:
        resp = await self.upstream.post_json(
            f"{deployment.provider.base_url}/chat/completions",
            headers=self._headers(deployment),
            body=self._body(request, deployment, stream=False),
            timeouts=deployment.provider.timeouts,
        )
        body = resp.body
        _raise_embedded_error(body)
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise UpstreamFailure(FailureKind.BAD_RESPONSE, "response has no valid choices")
        return Completion(body, usage_from_openai(body.get("usage")))

    def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncGenerator[Json, None]:
        """A ``ChunkStream``: the relay can have its chunks pushed (no task wake per chunk)."""
        return ChunkStream(partial(self._open_stream, request, deployment), _Chunks(),
                           deployment.provider.timeouts.chunk_timeout_s, plain=plain_chunks)

    async def _open_stream(self, request: ChatRequest, deployment: Deployment) -> Response:
        return await self.upstream.open_event_stream(
            f"{deployment.provider.base_url}/chat/completions",
            headers=self._headers(deployment),
            body=self._body(request, deployment, stream=True),
            timeouts=deployment.provider.timeouts,
        )


class _Chunks:
    """Events of an OpenAI stream as chunks, each checked; ``[DONE]`` ends it."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False

    def event(self, event: SseEvent) -> list[Json] | None:
        if event.data == b"[DONE]":
            return None
        chunk: Json = event_json(event.data)
        _raise_embedded_error(chunk)
        self.finished = _check_chunk(chunk) or self.finished
        return [chunk]

    def end(self) -> list[Json]:
        if not self.finished:
            # A body that simply stops is a cut stream, not a whole answer.
            raise UpstreamFailure(FailureKind.CONNECT, "stream ended before [DONE]")
        return []


def plain_chunks(data: bytes) -> list[Json] | None:
    """The chunks of a read that may be relayed as the bytes it came in, or None.

    Such a read is whole events, each one ``data: {…}`` line (no ``\r``: a client's parser
    would break the line there), each chunk valid JSON and of the shape ``_check_chunk``
    wants, and none of them the end marker or a chunk the gateway must act on: an ``error``
    key, a ``usage`` that is not null, a finished choice. For those chunks the parser's path
    (``_Chunks.event``) would give the same chunks and nothing else; every other read takes
    it, and a read that fails here (bad JSON among them) is parsed there again to say why.
    """
    if not (data.startswith(b"data: {") and data.endswith(b"}\n\n")) or b"\r" in data:
        return None
    if data.count(b"\n") == 2:  # one event: what providers send between pauses
        chunk = _plain(data[6:-2])
        return None if chunk is None else [chunk]
    chunks = []
    for block in data[:-2].split(b"\n\n"):
        if not block.startswith(b"data: {") or b"\n" in block:
            return None
        if (chunk := _plain(block[6:])) is None:
            return None
        chunks.append(chunk)
    return chunks


def _plain(payload: bytes) -> Json | None:
    try:
        chunk = json_depth.loads(payload)  # as the parser's path reads it
    except orjson.JSONDecodeError:
        return None
    if type(chunk) is not dict or "error" in chunk or chunk.get("usage") is not None:
        return None
    choices = chunk.get("choices")
    if type(choices) is not list:
        return None
    for choice in choices:
        if (type(choice) is not dict or choice.get("finish_reason")
                or type(choice.get("delta", _NO_DELTA)) is not dict):
            return None
    return chunk


_NO_DELTA: Json = {}


def _check_chunk(chunk: Any) -> bool:
    """Refuse a chunk whose shape the gateway cannot relay; True when it finishes a choice."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if choices is None and isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
        # The usage chunk, as some OpenAI-compatible servers send it: no choices, or null.
        chunk["choices"] = []
        return False
    if not isinstance(choices, list):
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "stream chunk has malformed choices")
    finished = False
    for c in choices:  # a loop, not all()/any() over generators: this runs for every chunk
        if not isinstance(c, dict) or not isinstance(c.get("delta", {}), dict):
            raise UpstreamFailure(FailureKind.BAD_RESPONSE, "stream chunk has malformed choices")
        finished = finished or bool(c.get("finish_reason"))
    return finished


def _raise_embedded_error(body: Any) -> None:
    if isinstance(body, dict) and body.get("error"):
        raise UpstreamFailure(
            FailureKind.ERROR_IN_BODY, error_message(body, 200), body=dict(body)
        )
