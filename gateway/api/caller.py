"""Who is calling: the API key in ``Authorization`` (or Anthropic's ``x-api-key``) mapped to
its tenant (in memory)."""

from __future__ import annotations

from aiohttp import web

from gateway.tenants.auth import Principal
from gateway.tenants.context import AUTH_KEY, PRINCIPAL


def caller(request: web.Request) -> Principal:
    """The request's principal; ``AuthenticationFailed`` (401) when keys are required and wrong.

    Kept on the request, so that a refusal after this point is recorded against its tenant."""
    header = request.headers.get("Authorization")
    if header is None and (key := request.headers.get("x-api-key")):
        header = f"Bearer {key}"  # Anthropic's clients send the key this way
    principal = request[PRINCIPAL] = request.app[AUTH_KEY].identify(header)
    return principal
