"""``/healthz`` (the process is alive) and ``/readyz`` (it is ready to serve requests)."""

from __future__ import annotations

import os

from aiohttp import web

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.core.appkeys import LIFECYCLE, SETTINGS
from gateway.core.lifecycle import State
from gateway.routing.context import ROUTER


async def healthz(request: web.Request) -> web.Response:
    """Alive; one of several processes on the port also says which (``[server] processes``)."""
    index = request.app[SETTINGS].server.process_index
    if index is None:
        return web.json_response({"status": "alive"})
    return web.json_response({"status": "alive", "process": index, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    """Ready once started and, where an embedder is configured, once a worker is warm."""
    state = request.app[LIFECYCLE].state
    checks = {"lifecycle": state.value}
    ready = state is State.READY
    pool = request.app.get(EMBEDDER_POOL)
    if pool is not None:
        checks["embedder"] = "ready" if pool.ready else "starting"
        ready = ready and pool.ready
    router = request.app.get(ROUTER)
    if router is not None:
        checks["routing"] = "ready" if router.loaded.is_set() else "loading"
        ready = ready and router.loaded.is_set()
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
