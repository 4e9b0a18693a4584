"""``/dashboard/login`` and ``/dashboard/logout``: the form, the admin key check, the cookie.

A wrong key gets the form again with a 401 and the same message whatever was wrong with it; the
key is never logged, echoed or stored. After login the browser goes back to the page it asked
for (``next``, a dashboard path only).
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.observability.dashboard.session import (
    COOKIE,
    LOGIN_PATH,
    admin_key_ok,
    clear_session_cookie,
    read_form,
    safe_next,
    set_session_cookie,
)
from gateway.observability.dashboard.state import DASHBOARD_KEY, authenticator, logged_in, render

log = logging.getLogger(__name__)

WRONG_KEY = "That is not the admin key."


async def login_form(request: web.Request) -> web.StreamResponse:
    target = safe_next(request.query.get("next"))
    if logged_in(request):
        raise web.HTTPSeeOther(target)
    return render(request, "login.html", {"next": target, "error": None})


async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    auth = authenticator(request)
    if not admin_key_ok(auth.authenticate_admin, form.get("key", "")):
        log.info("dashboard login refused (from %s)", request.remote)
        return render(request, "login.html", {"next": target, "error": WRONG_KEY}, status=401)
    dashboard = request.app[DASHBOARD_KEY]
    response = see_other(target)
    token = dashboard.sessions.issue(auth.secret)
    set_session_cookie(request, response, token, dashboard.sessions.ttl_s)
    log.info("dashboard login (from %s)", request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD_KEY]
    dashboard.sessions.revoke(authenticator(request).secret, request.cookies.get(COOKIE))
    response = see_other(LOGIN_PATH)
    clear_session_cookie(request, response)
    return response


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
