"""A fast fake OpenAI-compatible upstream for benchmarks.

    python bench/fake_upstream.py [--host 127.0.0.1] --port 9100 [--chunks 20] [--chunk-delay-ms 0]

Non-streaming requests get a fixed ``chat.completion``; streaming ones get ``--chunks`` SSE
chunks ``--chunk-delay-ms`` apart, a usage chunk and ``[DONE]``. Answers are prepared once, so
the fake spends as little CPU as possible per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Benchmark answer."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}).encode()


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "bench-upstream",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = b"data: " + json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
    "model": "bench-upstream", "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
}).encode() + b"\n\n"


def make_app(chunks: int, delay_s: float) -> web.Application:
    first = _chunk({"role": "assistant", "content": ""})
    words = [_chunk({"content": f" word{i}"}) for i in range(chunks)]
    last = _chunk({}, "stop")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body.replace(b" ", b""):
            return web.Response(body=COMPLETION, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(first)
        for word in words:
            if delay_s:
                await asyncio.sleep(delay_s)
            await resp.write(word)
        await resp.write(last + USAGE + b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    web.run_app(make_app(args.chunks, args.chunk_delay_ms / 1000), host=args.host,
                port=args.port, access_log=None, print=None,
                backlog=4096)  # a wave of connections (bench_streams) fits; the kernel caps it


if __name__ == "__main__":
    main()
