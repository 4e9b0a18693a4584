"""Admin calls on the semantic cache: look at it, invalidate one entry or a whole namespace.

    GET    /admin/cache                          counts, threshold, vector space
    DELETE /admin/cache/entries/{entry}          one entry: its id, or the name a tenant saw in
                                                 x-gateway-cache-entry with ?tenant=NAME
    DELETE /admin/cache/namespaces/{namespace}   every entry of a namespace ("tenant:acme")
    POST   /admin/cache/save                     write the vector index to disk now

``add_cache_admin_routes(app)`` registers them, each behind the admin key.
Handlers raise the gateway's errors; the error middleware renders them.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.api.admin import admin_only
from gateway.cache.context import CACHE, ENTRY_TOKENS
from gateway.cache.entry_tokens import PREFIX as NAME_PREFIX
from gateway.core.errors import InvalidRequest, NotFound
from gateway.core.sqlite import MAX_INT

log = logging.getLogger(__name__)

PREFIX = "/admin/cache"


async def cache_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[CACHE].stats())


async def invalidate_entry(request: web.Request) -> web.Response:
    entry_id = _entry_id(request)
    if not await request.app[CACHE].invalidate(entry_id):
        raise NotFound(f"No cache entry {request.match_info['entry_id']}.")
    log.info("cache entry %d invalidated by an admin", entry_id)
    return web.json_response({"invalidated": 1, "entry_id": entry_id})


def _entry_id(request: web.Request) -> int:
    """The id in the path: a number, or a tenant's opaque name with ``?tenant=``."""
    raw = request.match_info["entry_id"]
    if raw.startswith(NAME_PREFIX):
        tenant = request.query.get("tenant")
        if not tenant:
            raise InvalidRequest("A cache entry's name needs the tenant that saw it: ?tenant=.",
                                 param="tenant")
        entry_id = request.app[ENTRY_TOKENS].entry_id(tenant, raw)
        if entry_id is None:
            raise InvalidRequest(f"Invalid cache entry name {raw!r}.", param="entry_id")
        if entry_id > MAX_INT:
            raise NotFound(f"No cache entry {raw} for tenant {tenant}.")
        return entry_id
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_INT:
        raise InvalidRequest(f"Invalid cache entry id {raw!r}: expected a number or a name.",
                             param="entry_id")
    return int(raw)


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
