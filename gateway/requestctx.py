"""Per-request values kept on the aiohttp request under typed keys."""

from __future__ import annotations

from aiohttp import web

from gateway.tenants.auth import Principal

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
"""Who is calling, once the API key was checked: refusals after that name the tenant."""
ACCOUNTED = web.RequestKey("accounted", bool)
"""Set once the request will have a usage row: an error after that is not also a refusal."""
