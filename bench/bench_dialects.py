"""What answering in another dialect costs: chat completions against Anthropic Messages and
OpenAI Responses, through one gateway, side by side in one run.

    .venv/bin/python bench/bench_dialects.py [--seconds 3] [--rounds 5]

The harness of ``bench/bench_proxy.py`` (the same fake OpenAI-compatible upstream, gateway
configuration, tenant key and wrk load): one gateway, the same question asked the three ways
in alternating rounds at c=1, whole answers (wrk, p50/p99) and streams (time to the first
content chunk). Every dialect goes to the same upstream, so the differences are the
translation in and out (and, for Responses with ``store`` left on, the stored response).

First, in process and so immune to a busy machine: the CPU each dialect's edge costs per
request (body parsed and translated, the answer translated and serialised; for streams, the
same 20-chunk stream written by each dialect's writer), against chat completions' own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_proxy import _one_stream, cold_start, create_key, gateway_config, median_of, wrk
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
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


async def first_chunks(
    url: str, body: dict[str, Any], seconds: float, key: str
) -> dict[str, float]:
    """One stream after another for ``seconds``: time to the first content chunk, and whole."""
    data = json.dumps({**body, "stream": True}).encode()
    firsts: list[float] = []
    wholes: list[float] = []
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            first, whole = await _one_stream(session, url, data)
            firsts.append(first)
            wholes.append(whole)
    return {"ttfb_p50_ms": statistics.median(firsts), "p50_ms": statistics.median(wholes),
            "requests": len(firsts)}


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
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
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
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for name, (path, body) in BODIES.items():
                url = f"http://127.0.0.1:{port}{path}"
                script = tmp / f"{name}.lua"
                script.write_text(LUA % (json.dumps(body), key))
                json_run = wrk(url, 1, args.seconds, script)
                assert not json_run["errors"], (name, json_run)
                runs.setdefault(f"json {name}", []).append(json_run)
                stream_run = asyncio.run(first_chunks(url, body, args.seconds, key))
                runs.setdefault(f"stream {name}", []).append(stream_run)
    finally:
        stop(gateway)
        stop(upstream)
    results = {cell: median_of(r) for cell, r in runs.items()}
    report(results)
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/dialects.json").write_text(json.dumps(
        {"edge_cpu_us": costs, "results": results}, indent=2))


def report(results: dict[str, dict[str, float]]) -> None:
    chat, chat_stream = results["json chat"], results["stream chat"]
    print(f"chat completions: p50 {chat['p50_ms']:.3f} ms, p99 {chat['p99_ms']:.3f} ms, "
          f"first chunk p50 {chat_stream['ttfb_p50_ms']:.3f} ms")
    for name in BODIES:
        if name == "chat":
            continue
        j, s = results[f"json {name}"], results[f"stream {name}"]
        print(f"{name:16} p50 {j['p50_ms'] - chat['p50_ms']:+.3f} ms"
              f" (p99 {j['p99_ms'] - chat['p99_ms']:+.3f}) | first chunk"
              f" {s['ttfb_p50_ms'] - chat_stream['ttfb_p50_ms']:+.3f} ms"
              f" | whole stream {s['p50_ms'] - chat_stream['p50_ms']:+.3f} ms", flush=True)


if __name__ == "__main__":
    main()
