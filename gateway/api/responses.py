"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: OpenAI's Responses API.

The body is translated into the gateway's ``ChatRequest`` (``gateway.api.responses_in``),
after the stored conversation of its ``previous_response_id``, and goes down the same path as
chat completions (``gateway.api.chat.serve``); ``ResponsesFace`` translates the answer back
(``gateway.api.responses_out``) and, unless the request says ``store: false``, keeps the
response and its conversation in the tenant's response store before the answer's last bytes
leave, so a follow-up can never outrun it. Errors are OpenAI's error JSON, as for chat.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.api.chat import serve
from gateway.api.responses_in import responses_request
from gateway.api.responses_out import ResponseEvents, Shape, output_messages, response_object
from gateway.core.appkeys import SETTINGS
from gateway.core.chat import Json, field_error, json_object, shown_value
from gateway.core.errors import NotFound
from gateway.pipeline.streaming import ChunkWriter
from gateway.tenants.response_store import RESPONSE_STORE, ResponseStore, StoredResponse

RESPONSES_PATH = "/v1/responses"
_DAY_S = 86_400.0
_SHOWN_ID_CHARS = 100
"""An unknown id longer than this is described, not repeated, in the 404."""


class ResponsesFace:
    """The Responses API's view of an answer; stores it when asked to."""

    api = "responses"
    __slots__ = ("_events", "_final", "messages", "retention_s", "shape", "store", "tenant")

    def __init__(self, shape: Shape, messages: tuple[Json, ...], store: ResponseStore | None,
                 tenant: str, retention_s: float) -> None:
        self.shape, self.messages, self.store = shape, messages, store
        self.tenant, self.retention_s = tenant, retention_s
        self._events: ResponseEvents | None = None
        self._final: Json | None = None

    def answer(self, body: Json, native: Json | None) -> Json:
        self._final = response_object(self.shape, body)
        return self._final

    def writer(self) -> ChunkWriter:
        self._events = ResponseEvents(self.shape)
        return self._events

    def headers(self, limit_headers: dict[str, str]) -> dict[str, str]:
        return {}

    async def finish(self) -> None:
        final = self._events.complete() if self._events is not None else self._final
        if self.store is None or final is None:
            return
        conversation = (*self.messages, *output_messages(final))
        await self.store.put(self.tenant, StoredResponse(final, conversation), self.retention_s)


async def create_response(request: web.Request) -> web.StreamResponse:
    principal = caller(request)
    body = json_object(await read_body(request))
    store = request.app[RESPONSE_STORE]
    history: tuple[Json, ...] = ()
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str):
            raise field_error("previous_response_id", "a string", previous)
        stored = await store.get(principal.tenant, previous)
        if stored is None:
            shown = f"'{previous}'" if len(previous) <= _SHOWN_ID_CHARS else shown_value(previous)
            raise NotFound(f"Previous response with id {shown} not found.",
                           param="previous_response_id")
        history = stored.messages
    translated = responses_request(body, history)
    retention_s = request.app[SETTINGS].server.response_retention_days * _DAY_S
    face = ResponsesFace(Shape.of(body), translated.messages,
                         store if body.get("store", True) else None, principal.tenant,
                         retention_s)
    return await serve(request, principal, translated.chat, face)


async def get_response(request: web.Request) -> web.Response:
    principal = caller(request)
    response_id = request.match_info["response_id"]
    stored = await request.app[RESPONSE_STORE].get(principal.tenant, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.")
    return web.json_response(stored.response)


async def delete_response(request: web.Request) -> web.Response:
    principal = caller(request)
    response_id = request.match_info["response_id"]
    if not await request.app[RESPONSE_STORE].delete(principal.tenant, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.")
    return web.json_response({"id": response_id, "object": "response", "deleted": True})
