"""``setup_dashboard(app, settings)``: the Jinja environment, the routes and the static files.

Templates come from the repository's top-level ``templates/`` folder (found next to the
``gateway`` package, which an editable install keeps in place) or from
``[observability] templates_dir``. Static files (the stylesheet, the optional auto-refresh
script) are served by the gateway itself from ``templates/static/``: the pages load nothing from
elsewhere, and a Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import gateway
from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.dashboard import login, views
from gateway.observability.dashboard.format import FILTERS, pairs
from gateway.observability.dashboard.session import HOME_PATH, Sessions
from gateway.observability.dashboard.state import (
    DASHBOARD_KEY,
    JINJA_KEY,
    Dashboard,
    reader_context,
)

STATIC_PREFIX = "/dashboard/static"
STATIC_ROUTE = "dashboard-static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def default_templates_dir() -> Path:
    """``templates/`` beside the ``gateway`` package, in a checkout or an editable install."""
    return Path(gateway.__file__).resolve().parent.parent / "templates"


def setup_dashboard(
    app: web.Application,
    settings: ObservabilitySettings | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the dashboard's routes to ``app``; call after ``tenants.configure`` (whose store it
    reads). Does nothing with ``[observability] dashboard = false``."""
    settings = settings or ObservabilitySettings()
    if not settings.dashboard:
        return
    templates = settings.templates_dir or default_templates_dir()
    if not (templates / "base.html").is_file():
        raise RuntimeError(f"dashboard templates not found in {templates}; set "
                           "[observability] templates_dir or install the gateway editable")
    env = aiohttp_jinja2.setup(
        app, app_key=JINJA_KEY, default_helpers=False, filters=FILTERS,
        loader=jinja2.FileSystemLoader(str(templates)), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    app[DASHBOARD_KEY] = Dashboard(settings, Sessions(settings.session_ttl_s, clock), templates,
                                   clock)
    app.cleanup_ctx.append(reader_context)
    _add_routes(app, templates / "static")
    env.globals["static"] = _static_url(app)
    env.filters["pairs"] = pairs
    app.on_response_prepare.append(_security_headers)


def _add_routes(app: web.Application, static_dir: Path) -> None:
    router = app.router
    router.add_get(HOME_PATH, views.overview)
    router.add_get(f"{HOME_PATH}/", views.overview)
    router.add_get(f"{HOME_PATH}/providers", views.providers)
    router.add_get(f"{HOME_PATH}/tenants", views.tenants)
    router.add_get(f"{HOME_PATH}/requests", views.requests_page)
    router.add_get(f"{HOME_PATH}/login", login.login_form)
    router.add_post(f"{HOME_PATH}/login", login.login)
    router.add_get(f"{HOME_PATH}/logout", login.logout)
    router.add_post(f"{HOME_PATH}/logout", login.logout)
    router.add_static(STATIC_PREFIX, static_dir, name=STATIC_ROUTE, append_version=True)


def _static_url(app: web.Application) -> Callable[[str], str]:
    def url(filename: str) -> str:
        resource = app.router[STATIC_ROUTE]
        return str(resource.url_for(filename=filename))

    return url


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == HOME_PATH or request.path.startswith(HOME_PATH + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
