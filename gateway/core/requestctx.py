"""Per-request values kept on the aiohttp request under typed keys (the caller's principal is
``gateway.tenants.context.PRINCIPAL``, beside the tenants' own keys)."""

from __future__ import annotations

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
ACCOUNTED = web.RequestKey("accounted", bool)
"""Set once the request will have a usage row: an error after that is not also a refusal."""
