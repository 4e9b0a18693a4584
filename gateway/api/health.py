"""``/healthz`` (the process is alive) and ``/readyz`` (it is ready to serve requests)."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import LIFECYCLE
from gateway.lifecycle import State


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[LIFECYCLE].state
    checks = {"lifecycle": state.value}
    ready = state is State.READY
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
