"""A stand-in OpenTelemetry collector for benchmarks: accepts OTLP/HTTP exports and drops them.

    .venv/bin/python bench/otlp_sink.py --port 4318

Answers ``POST /v1/traces`` and ``POST /v1/metrics`` with an empty export response (an empty
protobuf message is zero bytes), after reading the body, and counts what it received.
"""

from __future__ import annotations

import argparse

from aiohttp import web

RECEIVED = web.AppKey("received", dict)


async def _export(request: web.Request) -> web.Response:
    body = await request.read()
    counts = request.app[RECEIVED]
    counts[request.path] = counts.get(request.path, 0) + len(body)
    return web.Response(body=b"", content_type="application/x-protobuf")


async def _counts(request: web.Request) -> web.Response:
    return web.json_response(request.app[RECEIVED])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[RECEIVED] = {}
    app.router.add_post("/v1/traces", _export)
    app.router.add_post("/v1/metrics", _export)
    app.router.add_get("/counts", _counts)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
