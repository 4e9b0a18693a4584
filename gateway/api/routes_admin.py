"""Admin call on the intent routes: reload the routes file here and on every replica.

    POST /admin/routes/reload    read [routing] routes_file again, train and install the router

``add_routes_admin_routes(app)`` registers it behind the admin key. The reload finishes before
the answer (a bad file is a 400 naming the problem, and the router in use stays); then a
``routes`` notice tells the other replicas (with ``[cluster] redis_url``) to reload theirs.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.admin import admin_only
from gateway.core.errors import InvalidRequest
from gateway.core.notices import NOTICES
from gateway.core.toml_table import ConfigError
from gateway.routing.follow import reload_routes


async def reload(request: web.Request) -> web.Response:
    try:
        routes = await reload_routes(request.app)
    except ConfigError as exc:
        raise InvalidRequest(f"The routes file was not reloaded: {exc}") from exc
    notices = request.app.get(NOTICES)
    told = notices is not None and await notices.publish("routes",
                                                         {"file": str(routes.source)})
    return web.json_response({"routes": [r.name for r in routes.routes],
                              "source": str(routes.source), "replicas_notified": told})


def add_routes_admin_routes(app: web.Application) -> None:
    app.router.add_post("/admin/routes/reload", admin_only(reload))
