"""``gateway`` with timestamps on the events that could make a slow request, for tail_trace.py.

    python bench/traced_gateway.py TRACE.json serve --config ... --port ...

Runs ``gateway.__main__.main`` unchanged after hooking: garbage collections (``gc.callbacks``),
the ledger's and the routing signals' writes to SQLite, the access log's flushes and each
request's time inside the handler stack, with the event loop thread's CPU time and context
switches over it. On exit it writes the ``time.perf_counter`` windows
(CLOCK_MONOTONIC, the same clock the load generator reads in its own process) to TRACE.json.
Not a product: a probe.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import resource
import sys
import time
from typing import Any

Window = tuple[float, float]


def hook_gc(events: dict[str, list[Any]]) -> None:
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            events["gc"].append((started[0], time.perf_counter(), info["generation"]))

    gc.callbacks.append(on_gc)


def timed_async(owner: Any, name: str, sink: list[Window]) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await inner(*args, **kwargs)
        finally:
            sink.append((t0, time.perf_counter()))

    setattr(owner, name, wrapper)


def timed_sync(owner: Any, name: str, sink: list[Window]) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sink.append((t0, time.perf_counter()))

    setattr(owner, name, wrapper)


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    events: dict[str, list[Any]] = {"gc": [], "ledger": [], "signals": [], "log_flush": [],
                                    "handler": []}
    hook_gc(events)
    from aiohttp import web

    from gateway import app as app_module
    from gateway.observability import access_log
    from gateway.routing import signals
    from gateway.tenants import store

    timed_async(store.Store, "write_usage", events["ledger"])
    timed_async(signals.SqliteSignals, "write", events["signals"])
    timed_sync(access_log, "flush_access_log", events["log_flush"])
    inner = app_module.errors_middleware

    @web.middleware
    async def traced(request: web.Request, handler: Any) -> web.StreamResponse:
        # The event loop's thread: its CPU time and its context switches over the request,
        # voluntary (a wait: for the network, or for the GIL) and not (the kernel took the
        # core away). One getrusage call each side: about a microsecond.
        before = resource.getrusage(resource.RUSAGE_THREAD)
        t0 = time.perf_counter()
        try:
            return await inner(request, handler)
        finally:
            t1 = time.perf_counter()
            after = resource.getrusage(resource.RUSAGE_THREAD)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            events["handler"].append((t0, t1, cpu, after.ru_nvcsw - before.ru_nvcsw,
                                      after.ru_nivcsw - before.ru_nivcsw))

    app_module.errors_middleware = traced  # type: ignore[assignment]

    def dump() -> None:
        with open(out, "w") as f:
            json.dump(events, f)

    atexit.register(dump)
    from gateway.__main__ import main as gateway_main

    return gateway_main(argv)


if __name__ == "__main__":
    sys.exit(main())
