"""Admin calls on the semantic cache: look at it, invalidate one entry or a whole namespace.

    GET    /admin/cache                          counts, threshold, vector space
    DELETE /admin/cache/entries/{entry_id}       one entry (its id is in x-gateway-cache-entry)
    DELETE /admin/cache/namespaces/{namespace}   every entry of a namespace ("tenant:acme")
    POST   /admin/cache/save                     write the vector index to disk now

``add_cache_admin_routes(app)`` registers them, each behind the admin key.
Handlers raise the gateway's errors; the error middleware renders them.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.api.admin import admin_only
from gateway.cache.context import CACHE
from gateway.core.errors import InvalidRequest, NotFound
from gateway.core.sqlite import MAX_INT

log = logging.getLogger(__name__)

PREFIX = "/admin/cache"


async def cache_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[CACHE].stats())


async def invalidate_entry(request: web.Request) -> web.Response:
    raw = request.match_info["entry_id"]
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_INT:
        raise InvalidRequest(f"Invalid cache entry id {raw!r}: expected a number.",
                             param="entry_id")
    entry_id = int(raw)
    if not await request.app[CACHE].invalidate(entry_id):
        raise NotFound(f"No cache entry {entry_id}.")
    log.info("cache entry %d invalidated by an admin", entry_id)
    return web.json_response({"invalidated": 1, "entry_id": entry_id})


async def invalidate_namespace(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    if not namespace:
        raise InvalidRequest("A namespace is required.", param="namespace")
    removed = await request.app[CACHE].invalidate_namespace(namespace)
    log.info("cache namespace %s invalidated by an admin: %d entries", namespace, removed)
    return web.json_response({"invalidated": removed, "namespace": namespace})


async def save_index(request: web.Request) -> web.Response:
    written = await request.app[CACHE].save()
    return web.json_response({"saved_files": written})


def add_cache_admin_routes(app: web.Application, prefix: str = PREFIX) -> None:
    app.router.add_get(prefix, admin_only(cache_stats))
    app.router.add_delete(prefix + "/entries/{entry_id}", admin_only(invalidate_entry))
    app.router.add_delete(prefix + "/namespaces/{namespace}", admin_only(invalidate_namespace))
    app.router.add_post(prefix + "/save", admin_only(save_index))
