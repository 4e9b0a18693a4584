"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API in front.

The body is translated into the gateway's ``ChatRequest`` (``gateway.api.messages_in``) and
goes down the same path as chat completions (``gateway.api.chat.serve``: keys, limits, routing
including ``auto``, the cache, failover, escalation, the ledger); ``MessagesFace`` translates
the answer back (``gateway.api.messages_out``). Errors on these paths are rendered in
Anthropic's shape by the app's error middleware (``is_messages_path``). The key may come as
``x-api-key`` (Anthropic's clients) or ``Authorization: Bearer``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.api.chat import serve
from gateway.api.messages_in import messages_request
from gateway.api.messages_out import MessageEvents, message_body
from gateway.core.answer import Json
from gateway.core.chat import json_object
from gateway.pipeline.streaming import ChunkWriter
from gateway.tenants.context import ADMISSION_KEY

MESSAGES_PATH = "/v1/messages"
_LIMIT_NAMES = {
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-limit-tokens": "anthropic-ratelimit-tokens-limit",
    "x-ratelimit-remaining-tokens": "anthropic-ratelimit-tokens-remaining",
}


def is_messages_path(path: str) -> bool:
    """Whether errors on ``path`` are answered in Anthropic's shape."""
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


class MessagesFace:
    """The Messages API's view of an answer."""

    api = "messages"
    __slots__ = ()

    def answer(self, body: Json, native: Json | None) -> Json:
        return message_body(body, native)

    def writer(self) -> ChunkWriter:
        return MessageEvents()

    def headers(self, limit_headers: dict[str, str]) -> dict[str, str]:
        return {_LIMIT_NAMES[k]: v for k, v in limit_headers.items() if k in _LIMIT_NAMES}

    async def finish(self) -> None:
        return None


async def create_message(request: web.Request) -> web.StreamResponse:
    principal = caller(request)
    chat = messages_request(json_object(await read_body(request)), request.headers)
    return await serve(request, principal, chat, MessagesFace())


async def count_tokens(request: web.Request) -> web.Response:
    """The prompt's size by the gateway's own tokenizer: an estimate, the same for every model
    (it is what admission reserves against the tenant's token limits)."""
    caller(request)
    chat = messages_request(json_object(await read_body(request)), request.headers,
                            counting=True)
    tokens = request.app[ADMISSION_KEY].tokens.prompt_tokens(chat)
    return web.json_response({"input_tokens": tokens})
