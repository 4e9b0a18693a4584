"""Routes that follow the fleet: reload the routes file when any replica says it was rebuilt.

``reload_routes(app)`` reads the configured routes file again, trains the router on it and
installs it; a bad file is logged and the router in use stays. ``follow_routes`` is the task
that ``routes_follow_context`` owns when Redis is configured (register it after the routing and
notices contexts): it reloads on a peer's ``routes`` notice (a
``POST /admin/routes/reload`` or ``gateway routes build|fit`` elsewhere) and, as the backstop for
missed notices, whenever the file's size or modification time changed since the last load
(checked every ``[cluster] resync_interval_s``). Reloads run one at a time, off the listener, so
training never delays other notices. Touches the routes file and, through the router, the
embedder pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.core.notices import NOTICES, Notice, Notices
from gateway.core.redis_link import CLUSTER_SETTINGS
from gateway.core.routing_settings import tier_plan
from gateway.core.toml_table import ConfigError
from gateway.routing.context import ROUTER, ROUTING_CONFIG, load_router
from gateway.routing.routes import RouteSet, load_configured_routes

log = logging.getLogger(__name__)

RELOAD_LOCK = web.AppKey("routes_reload_lock", asyncio.Lock)


def file_stamp(path: Path) -> tuple[int, int] | None:
    """What tells a rewritten file apart: its size and modification time (None: missing)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


async def reload_routes(app: web.Application) -> RouteSet:
    """Load the routes file again and install the router trained on it (one at a time).

    Raises ``ConfigError`` (the router in use stays) when the file is missing or invalid.
    """
    config = app[ROUTING_CONFIG]
    async with app[RELOAD_LOCK]:
        plan = tier_plan(config.settings, config.tiers)
        routes = load_configured_routes(config.settings, config.tiers, plan)
        app[ROUTER].install(await load_router(app, config, routes, plan))
    log.info("routes reloaded from %s: %d routes", routes.source, len(routes.routes))
    return routes


async def follow_routes(app: web.Application, notices: Notices, interval_s: float) -> None:
    """Reload on a peer's notice, or when the file changed (see the module docstring)."""
    path = app[ROUTING_CONFIG].settings.routes_file
    wanted = asyncio.Event()

    async def on_notice(notice: Notice) -> None:
        log.info("routes rebuilt on replica %s: reloading", notice.origin)
        wanted.set()

    notices.subscribe("routes", on_notice)
    stamp = file_stamp(path)
    while True:
        try:
            async with asyncio.timeout(interval_s):
                await wanted.wait()
        except TimeoutError:
            if file_stamp(path) == stamp:
                continue
        wanted.clear()
        stamp = file_stamp(path)
        try:
            await reload_routes(app)
        except ConfigError as exc:
            log.error("routes not reloaded, the router in use stays: %s", exc)


async def routes_follow_context(app: web.Application) -> AsyncIterator[None]:
    """The reload lock; with Redis, the ``follow_routes`` task, cancelled on exit."""
    app[RELOAD_LOCK] = asyncio.Lock()
    notices = app.get(NOTICES)
    if notices is None or notices.link is None:
        yield
        return
    interval_s = app[CLUSTER_SETTINGS].resync_interval_s
    task = asyncio.create_task(follow_routes(app, notices, interval_s), name="routes-follow")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
