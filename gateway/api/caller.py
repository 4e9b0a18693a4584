"""Who is calling: the API key in ``Authorization`` mapped to its tenant (in memory)."""

from __future__ import annotations

from aiohttp import web

from gateway.tenants.auth import Principal
from gateway.tenants.context import AUTH_KEY, PRINCIPAL


def caller(request: web.Request) -> Principal:
    """The request's principal; ``AuthenticationFailed`` (401) when keys are required and wrong.

    Kept on the request, so that a refusal after this point is recorded against its tenant."""
    principal = request[PRINCIPAL] = request.app[AUTH_KEY].identify(
        request.headers.get("Authorization"))
    return principal
