"""The floor of this design: the thinnest aiohttp pass-through (uvloop, no parsing, no checks).

    python bench/floor_proxy.py --port 9200 --upstream http://127.0.0.1:9100

Not a product: it exists so bench_proxy.py can show how far the gateway sits from the floor
on the same machine, in the same run.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app[SESSION].post(upstream + request.path, data=body,
                                             headers={"Content-Type": "application/json"}) as up:
            if "text/event-stream" not in up.headers.get("Content-Type", ""):
                return web.Response(body=await up.read(), status=up.status,
                                    content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            return resp

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100")
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
