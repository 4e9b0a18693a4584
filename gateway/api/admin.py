"""The admin HTTP API under ``/admin/``: tenants, keys and usage, for the admin key only.

Every route is wrapped by ``admin_only`` when it is registered, so none can be added without the
check: the admin key passes, a tenant key gets 403, anything else the usual 401. Handlers raise
errors from ``gateway.core.errors`` and never build error bodies. Changes reload the in-memory keys
before answering, so a revoked key is refused from the next request on, and publish a ``keys``
notice so the other replicas (with ``[cluster] redis_url``) reload within a second.

    GET    /admin/tenants                   POST /admin/tenants {"name", "limits"?}
    GET    /admin/tenants/{tenant}          PATCH /admin/tenants/{tenant} {"limits"?, "disabled"?}
    DELETE /admin/tenants/{tenant}
    GET    /admin/tenants/{tenant}/keys     POST /admin/tenants/{tenant}/keys {"name"?, "limits"?}
    GET    /admin/keys?tenant=&active=      DELETE /admin/keys/{key_id}   (revoke)
    GET    /admin/tenants/{tenant}/usage?limit=&since_day=
    GET    /admin/usage?since_day=
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.api.body import read_body
from gateway.core.chat import field_error, json_object
from gateway.core.errors import InvalidRequest
from gateway.core.notices import NOTICES
from gateway.core.tenant_settings import Limits
from gateway.tenants import ledger
from gateway.tenants.context import AUTH_KEY, CONFIG_KEY, LEDGER_KEY, STORE_KEY, publish_change
from gateway.tenants.store import apply_limit_changes, check_limit_changes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_ROWS = 1000


def add_admin_routes(app: web.Application) -> None:
    """Register the admin routes on ``app`` (which must run ``tenants_context``)."""
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/admin/tenants", list_tenants),
        ("POST", "/admin/tenants", create_tenant),
        ("GET", "/admin/tenants/{tenant}", get_tenant),
        ("PATCH", "/admin/tenants/{tenant}", update_tenant),
        ("DELETE", "/admin/tenants/{tenant}", delete_tenant),
        ("GET", "/admin/tenants/{tenant}/keys", list_tenant_keys),
        ("POST", "/admin/tenants/{tenant}/keys", create_key),
        ("GET", "/admin/tenants/{tenant}/usage", tenant_usage),
        ("GET", "/admin/keys", list_keys),
        ("DELETE", "/admin/keys/{key_id}", revoke_key),
        ("GET", "/admin/usage", all_usage),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, admin_only(handler))


def admin_only(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        request.app[AUTH_KEY].authenticate_admin(request.headers.get("Authorization"))
        return await handler(request)

    return checked


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    return json_object(await read_body(request) or b"{}")


def _limits_field(data: dict[str, Any]) -> dict[str, int | float | None]:
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise field_error("limits", "an object", limits)
    return check_limit_changes(limits)


def _reject_unknown(data: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequest(f"Unknown field {unknown[0]!r}.", param=unknown[0])


async def _reload(request: web.Request) -> None:
    await request.app[AUTH_KEY].reload(request.app[STORE_KEY])
    await publish_change(request.app.get(NOTICES))


async def list_tenants(request: web.Request) -> web.Response:
    tenants = await request.app[STORE_KEY].list_tenants()
    return _json({"object": "list", "data": [t.as_json() for t in tenants]})


async def create_tenant(request: web.Request) -> web.Response:
    data = await _body(request)
    _reject_unknown(data, {"name", "limits"})
    name = data.get("name")
    if not isinstance(name, str):
        raise field_error("name", "a string", name)
    base = request.app[CONFIG_KEY].settings.default_limits
    limits = apply_limit_changes(base, _limits_field(data))
    tenant = await request.app[STORE_KEY].create_tenant(name, limits)
    await _reload(request)
    return _json(tenant.as_json(), status=201)


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await request.app[STORE_KEY].get_tenant(request.match_info["tenant"])
    return _json(tenant.as_json())


async def update_tenant(request: web.Request) -> web.Response:
    data = await _body(request)
    _reject_unknown(data, {"limits", "disabled"})
    disabled = data.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        raise field_error("disabled", "true or false", disabled)
    tenant = await request.app[STORE_KEY].update_tenant(
        request.match_info["tenant"], limits=_limits_field(data), disabled=disabled
    )
    await _reload(request)
    return _json(tenant.as_json())


async def delete_tenant(request: web.Request) -> web.Response:
    name = request.match_info["tenant"]
    await request.app[STORE_KEY].delete_tenant(name)
    await _reload(request)
    return _json({"name": name, "deleted": True})


async def list_tenant_keys(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    tenant = await store.get_tenant(request.match_info["tenant"])
    keys = await store.list_keys(tenant.name)
    return _json({"object": "list", "data": [k.as_json() for k in keys]})


async def create_key(request: web.Request) -> web.Response:
    data = await _body(request)
    _reject_unknown(data, {"name", "limits"})
    name = data.get("name", "")
    if not isinstance(name, str):
        raise field_error("name", "a string", name)
    limits = apply_limit_changes(Limits(), _limits_field(data))
    store = request.app[STORE_KEY]
    secret = request.app[AUTH_KEY].secret
    record, key = await store.create_key(secret, request.match_info["tenant"], name=name,
                                         limits=limits)
    await _reload(request)
    return _json({**record.as_json(), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant")
    active = _flag(request, "active")
    keys = await request.app[STORE_KEY].list_keys(tenant, active_only=active)
    return _json({"object": "list", "data": [k.as_json() for k in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    record = await request.app[STORE_KEY].revoke_key(request.match_info["key_id"])
    await _reload(request)
    return _json(record.as_json())


async def tenant_usage(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    tenant = await store.get_tenant(request.match_info["tenant"])
    await request.app[LEDGER_KEY].flush()
    totals = await ledger.tenant_totals(store, tenant=tenant.name)
    empty = ledger.TenantTotals(tenant.name, ledger.Totals(), ledger.Totals())
    models = await ledger.spend_by_model(store, tenant=tenant.name, since_day=_since_day(request))
    rows = await ledger.recent(store, tenant=tenant.name, limit=_limit(request))
    return _json({
        "tenant": tenant.name,
        **_totals_json(totals[0] if totals else empty),
        "by_model": [dataclasses.asdict(m) for m in models],
        "recent": [dataclasses.asdict(r) for r in rows],
    })


async def all_usage(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    await request.app[LEDGER_KEY].flush()
    totals = await ledger.tenant_totals(store)
    models = await ledger.spend_by_model(store, since_day=_since_day(request))
    return _json({
        "tenants": [{"tenant": t.tenant, **_totals_json(t)} for t in totals],
        "by_model": [dataclasses.asdict(m) for m in models],
    })


def _totals_json(totals: ledger.TenantTotals) -> dict[str, Any]:
    return {"today": dataclasses.asdict(totals.today), "month": dataclasses.asdict(totals.month)}


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "50")
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= MAX_ROWS:
        raise field_error("limit", f"an integer from 0 to {MAX_ROWS}", text)
    return int(text)


def _since_day(request: web.Request) -> str | None:
    day = request.query.get("since_day")
    if day is None:
        return None
    try:
        valid = datetime.date.fromisoformat(day).isoformat() == day  # YYYY-MM-DD alone
    except ValueError:
        valid = False
    if not valid:
        raise field_error("since_day", "a date as YYYY-MM-DD", day)
    return day


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _flag(request: web.Request, name: str) -> bool:
    """A yes/no query parameter (absent: no); anything else is a 400, not a silent no."""
    text = request.query.get(name, "false")
    if text.lower() not in _TRUE + _FALSE:
        raise field_error(name, "true or false", text)
    return text.lower() in _TRUE
