"""``GET /v1/models``: the public model names this gateway serves, in OpenAI's list shape."""

from __future__ import annotations

from aiohttp import web

from gateway.api.caller import caller
from gateway.upstream.appkeys import CATALOG
from gateway.upstream.catalog import AUTO


async def list_models(request: web.Request) -> web.Response:
    caller(request)
    names = request.app[CATALOG].public_names()
    data = [{"id": AUTO, "object": "model", "created": 0, "owned_by": "gateway"}]
    data += [
        {"id": name, "object": "model", "created": 0, "owned_by": provider}
        for name, provider in names.items()
    ]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    caller(request)
    name = request.match_info["model"]
    catalog = request.app[CATALOG]
    owner = "gateway" if name == AUTO else catalog.named(name)[0].provider.name
    return web.json_response({"id": name, "object": "model", "created": 0, "owned_by": owner})
