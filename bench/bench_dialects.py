"""What answering in another dialect costs: chat completions against Anthropic Messages and
OpenAI Responses, through one gateway, side by side in one run.

    .venv/bin/python bench/bench_dialects.py [--requests 500]

The harness of ``bench/bench_proxy.py`` (the same fake OpenAI-compatible upstream, gateway
configuration, tenant key and stream timing): one gateway, the same question asked the three
ways at c=1, request by request in turn (so a busy machine's drifting load hits every dialect
alike): whole answers (p50 at the client, and the gateway's own time from ``Server-Timing``)
and streams (time to the first content chunk). Every dialect goes to the same upstream, so the
differences are the translation in and out (and, for Responses with ``store`` left on, the
stored response).

First, in process and so immune to a busy machine: the CPU each dialect's edge costs per
request (body parsed and translated, the answer translated and serialised; for streams, the
same 20-chunk stream written by each dialect's writer), against chat completions' own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_proxy import _one_stream, cold_start, create_key, gateway_config
from procs import free_port, start, stop, wait_port

QUESTION = "Hello there, benchmark!"
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {
        "model": "bench", "max_tokens": 100,
        "messages": [{"role": "user", "content": QUESTION}]}),
    "messages": ("/v1/messages", {
        "model": "bench", "max_tokens": 100,
        "messages": [{"role": "user", "content": QUESTION}]}),
    "responses": ("/v1/responses", {
        "model": "bench", "max_output_tokens": 100, "input": QUESTION, "store": False}),
    "responses+store": ("/v1/responses", {
        "model": "bench", "max_output_tokens": 100, "input": QUESTION}),
}
async def interleaved(port: int, key: str, requests: int) -> dict[str, dict[str, float]]:
    """Every dialect in turn (in a shuffled order), request by request, so a machine's drifting
    load hits all alike:
    whole answers (client time and the gateway's own ``gw`` from ``Server-Timing``) and streams
    (time to the first content chunk)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    seen: dict[str, dict[str, list[float]]] = {
        name: {"p50_ms": [], "gw_ms": [], "ttfb_ms": []} for name in BODIES}
    order = list(BODIES.items())
    rng = random.Random(18)
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(requests):
            rng.shuffle(order)  # no dialect always follows the same one
            for name, (path, body) in order:
                url = f"http://127.0.0.1:{port}{path}"
                started = time.perf_counter()
                async with session.post(url, data=json.dumps(body).encode()) as resp:
                    await resp.read()
                    assert resp.status == 200, (name, resp.status)
                    timing = resp.headers.get("Server-Timing", "")
                seen[name]["p50_ms"].append((time.perf_counter() - started) * 1000)
                seen[name]["gw_ms"].append(_stage(timing, "gw"))
                first, _ = await _one_stream(session, url,
                                             json.dumps({**body, "stream": True}).encode())
                seen[name]["ttfb_ms"].append(first)
    return {name: {k: statistics.median(v) for k, v in cells.items()}
            for name, cells in seen.items()}


def _stage(header: str, stage: str) -> float:
    for item in header.split(","):
        name, _, duration = item.strip().partition(";dur=")
        if name == stage:
            return float(duration)
    return float("nan")


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-upstream", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Benchmark answer."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


def chunks(count: int = 20) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
            "model": "bench-upstream"}
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}]}]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": f" word{i}"},
                                  "finish_reason": None}]} for i in range(count)]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**base, "choices": [], "usage": COMPLETION["usage"]})
    return out


def edge_costs(repeat: int = 20_000) -> dict[str, float]:
    """Microseconds per request at each dialect's edge, best of five runs."""
    import timeit

    import orjson

    from gateway.api.face import ChatFace
    from gateway.api.messages import MessagesFace
    from gateway.api.messages_in import messages_request
    from gateway.api.responses import ResponsesFace
    from gateway.api.responses_in import responses_request
    from gateway.api.responses_out import Shape
    from gateway.core.chat import json_object, parse_chat_request

    raw = {name: json.dumps({**body, "stream": False}).encode()
           for name, (_, body) in BODIES.items()}
    stream = chunks()

    def chat() -> None:
        parse_chat_request(raw["chat"])
        orjson.dumps(ChatFace(False).answer(COMPLETION, None))

    def messages() -> None:
        messages_request(json_object(raw["messages"]), {})
        orjson.dumps(MessagesFace().answer(COMPLETION, None))

    def responses() -> None:
        body = json_object(raw["responses"])
        translated = responses_request(body)
        face = ResponsesFace(Shape.of(body), translated.messages, None, "t", 1.0)
        orjson.dumps(face.answer(COMPLETION, None))

    def writes(face: Any) -> Any:
        def run() -> None:
            writer = face.writer()
            for c in stream:
                writer.chunk(c)
            writer.end()
        return run

    shape = Shape.of(BODIES["responses"][1])
    cases = {"chat": chat, "messages": messages, "responses": responses,
             "stream chat": writes(ChatFace(True)), "stream messages": writes(MessagesFace()),
             "stream responses": writes(ResponsesFace(shape, (), None, "t", 1.0))}
    return {name: min(timeit.repeat(fn, number=repeat, repeat=5)) / repeat * 1e6
            for name, fn in cases.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500, help="of each dialect")
    args = parser.parse_args()
    costs = edge_costs()
    for name, us in costs.items():
        base = costs["stream chat" if name.startswith("stream") else "chat"]
        print(f"edge CPU {name:17} {us:7.1f} us/request ({us - base:+.1f} over chat)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dialects-"))
    up_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port), "--chunks", "20"])
    wait_port(up_port)
    config = tmp / "gateway.toml"
    config.write_text(gateway_config(up_port, str(tmp / "data")))
    key = create_key(config)
    _, gateway, port = cold_start(config, key)
    try:
        results = asyncio.run(interleaved(port, key, args.requests))
    finally:
        stop(gateway)
        stop(upstream)
    report(results)
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/dialects.json").write_text(json.dumps(
        {"edge_cpu_us": costs, "results": results}, indent=2))


def report(results: dict[str, dict[str, float]]) -> None:
    chat = results["chat"]
    print(f"chat completions: p50 {chat['p50_ms']:.3f} ms (gateway's own {chat['gw_ms']:.3f}),"
          f" first chunk p50 {chat['ttfb_ms']:.3f} ms")
    for name, cells in results.items():
        if name != "chat":
            print(f"{name:16} p50 {cells['p50_ms'] - chat['p50_ms']:+.3f} ms"
                  f" | gateway's own {cells['gw_ms'] - chat['gw_ms']:+.3f} ms"
                  f" | first chunk {cells['ttfb_ms'] - chat['ttfb_ms']:+.3f} ms", flush=True)


if __name__ == "__main__":
    main()
