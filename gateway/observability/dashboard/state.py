"""What the dashboard keeps on the app, and the helpers every page handler shares.

``Dashboard`` (under ``DASHBOARD_KEY``) holds the settings, the session keeper and the clock;
the Jinja environment sits under ``JINJA_KEY``, the read-only database connection (one cleanup
context, ``reader_context``) under ``READER_KEY``. ``require_login`` wraps each page so that none
can be registered without the session check; ``render`` adds the context every page uses.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import aiosqlite
import jinja2
from aiohttp import web

from gateway.core.errors import ServiceUnavailable
from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.dashboard.session import COOKIE, Handler, Sessions, login_redirect
from gateway.tenants.auth import Authenticator
from gateway.tenants.backend import TenantStore
from gateway.tenants.context import AUTH_KEY, LEDGER_KEY, STORE_KEY
from gateway.tenants.rollups import register_functions
from gateway.tenants.store import Store

NAV = (("overview", "/dashboard", "Overview"), ("providers", "/dashboard/providers", "Providers"),
       ("tenants", "/dashboard/tenants", "Tenants"), ("requests", "/dashboard/requests",
                                                      "Requests"),
       ("routing", "/dashboard/routing", "Routing"))


@dataclass(frozen=True, slots=True)
class Dashboard:
    settings: ObservabilitySettings
    sessions: Sessions
    templates_dir: Path
    clock: Callable[[], float] = field(default=time.time)


DASHBOARD_KEY = web.AppKey("dashboard", Dashboard)
JINJA_KEY = web.AppKey("dashboard_jinja", jinja2.Environment)
READER_KEY = web.AppKey("dashboard_reader", Store)


def authenticator(request: web.Request) -> Authenticator:
    auth = request.app.get(AUTH_KEY)
    if auth is None:
        raise ServiceUnavailable("The dashboard needs the tenants store, which is not running.")
    return auth


async def reader_context(app: web.Application) -> AsyncIterator[None]:
    """The dashboard's own read-only connection to the tenants database.

    A week's percentiles can take a while; on a connection of its own (WAL lets readers and the
    writer work at once) such a query never holds up the ledger's writes or key reloads.
    """
    store = app.get(STORE_KEY)
    if not isinstance(store, Store):  # none, or the shared database's pool: no reader needed
        yield
        return
    db = await aiosqlite.connect(store.path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        await db.execute("PRAGMA busy_timeout = 5000")
        await register_functions(db)
        app[READER_KEY] = Store(db, store.path)
        yield
    finally:
        await db.close()


async def fresh_store(request: web.Request) -> TenantStore:
    """The dashboard's reader, after the ledger's queue was written so that pages are current."""
    ledger = request.app.get(LEDGER_KEY)
    if ledger is not None:
        await ledger.flush()
    store = request.app.get(READER_KEY) or request.app.get(STORE_KEY)
    if store is None:
        raise ServiceUnavailable("The dashboard needs the tenants store, which is not running.")
    return store


def logged_in(request: web.Request) -> bool:
    dashboard = request.app[DASHBOARD_KEY]
    secret = authenticator(request).secret
    return dashboard.sessions.check(secret, request.cookies.get(COOKIE)) is not None


def require_login(handler: Handler) -> Handler:
    """Send a visitor without a valid session to the login form, then back here."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        if not logged_in(request):
            raise login_redirect(request)
        return await handler(request)

    return checked


def render(request: web.Request, template: str, context: Mapping[str, Any],
           status: int = 200) -> web.Response:
    dashboard = request.app[DASHBOARD_KEY]
    now = dashboard.clock()
    base = {"nav": NAV, "now": now, "refresh_s": dashboard.settings.refresh_s,
            "path": request.path}
    response = aiohttp_jinja2.render_template(
        template, request, {**base, **context}, app_key=JINJA_KEY, status=status
    )
    response.headers["Cache-Control"] = "no-store"
    return response
