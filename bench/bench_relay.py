"""The stream relay's own CPU per chunk, in-process: no sockets, so no system calls.

    .venv/bin/python bench/bench_relay.py [--chunks 20000] [--rounds 5] [--per-read 1]
        [--usage] [--null-usage] [--cache] [--tree DIR ...]

``bench_streams.py`` measures the gateway's whole CPU per relayed chunk, and there the two
system calls per chunk (the upstream's read, the client's write) and the event loop's dispatch
are half of it and move by ±25% with the machine's load. This script measures the rest, the
Python between them, steadily: each tree's ``relay`` (``gateway.pipeline.streaming``) runs in a
subprocess with that tree's code on an OpenAI stream whose bytes are handed to the gateway's
HTTP client connection (``_Connection.data_received``, as uvloop would) one upstream read at a
time, each read ``--per-read`` events, each in its own HTTP/1.1 chunk as a provider writes them
(a read holds several when the gateway reads late), and the client's frames go to a
transport that only counts them. What a read costs, from the connection's callback to the
client's ``transport.write``, is timed in CPU time (``time.process_time``: a machine shared
with other work does not count) over ``--chunks`` chunks, and the rounds alternate the trees;
"unparsed" says whether the client got the upstream's own bytes (a pass-through) or chunks
parsed and encoded again. The events are the fake upstream's (``bench/fake_upstream.py``);
``--usage`` asks for the usage chunk as a client's ``stream_options.include_usage`` would;
``--null-usage`` puts ``"usage": null`` in every chunk, as OpenAI does when usage is asked
upstream (the gateway always asks), so a client that did not ask gets it cut out; ``--cache``
keeps the chunks, as a relay whose answer the cache will store does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class _Transport:
    """A transport that takes every write and never fills."""

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)
        self.last = data

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _event(delta: dict[str, str], finish: str | None = None, null_usage: bool = False) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "bench-upstream",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if null_usage:
        body["usage"] = None
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = (b'data: {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": '
         b'1700000000, "model": "bench-upstream", "choices": [], "usage": {"prompt_tokens": '
         b'12, "completion_tokens": 20, "total_tokens": 32}}\n\n')


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _upstream(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    """The gateway's HTTP client connection, its response's head read, and the OpenAI
    adapter's stream over it (its first chunk pulled, as failover does)."""
    from gateway.core.answer import Deployment
    from gateway.core.chat import parse_chat_request
    from gateway.core.config import ModelSettings, ProviderSettings
    from gateway.upstream.http_client import HttpClient, _Connection
    from gateway.upstream.providers.openai import OpenAIProvider

    up = _Connection(HttpClient(), ("http", "up", 80), loop)
    up.connection_made(_Transport())  # type: ignore[arg-type]
    head = up.send(b"POST / HTTP/1.1\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
    response = head.result()

    async def open_event_stream(*args: Any, **kwargs: Any) -> Any:
        return response

    deployment = Deployment(
        ModelSettings(name="bench", provider="p", upstream_model="up", tier="cheap"),
        ProviderSettings(name="p", kind="openai", base_url="http://up/v1"))
    chat = parse_chat_request(json.dumps({"model": "bench", "stream": True, "messages": [
        {"role": "user", "content": "Count"}]}).encode())
    upstream = SimpleNamespace(open_event_stream=open_event_stream)
    stream = OpenAIProvider(upstream).stream(chat, deployment)  # type: ignore[arg-type]
    up.data_received(_http_chunk(_event({"role": "assistant", "content": ""})))
    first = await stream.__anext__()
    return up, SimpleNamespace(
        deployment=SimpleNamespace(id="bench"), head=[first], tail=stream, first_byte_ms=1.0,
        health=SimpleNamespace(record_success=lambda *a: None, release_probe=lambda: None,
                               record_failure=lambda *a: None))


async def _client_response(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any, _Transport]:
    """A prepared streaming response whose frames go to a counting transport."""
    from aiohttp.http import StreamWriter
    from aiohttp.test_utils import make_mocked_request
    from aiohttp.web import StreamResponse

    client = _Transport()
    protocol = SimpleNamespace(transport=client, writing_paused=False, ssl_context=None,
                               peername=None, sockname=None)
    out = StreamWriter(protocol, loop)  # type: ignore[arg-type]
    request = make_mocked_request("POST", "/v1/chat/completions", writer=out,
                                  transport=client, protocol=protocol)
    resp = StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp, out, client


async def _one_run(chunks: int, per_read: int, usage: bool, cache: bool,
                   null_usage: bool) -> dict[str, float]:
    from gateway.core.lifecycle import Lifecycle
    from gateway.pipeline.request_record import RequestRecord
    from gateway.pipeline.streaming import OpenAIChunks, relay

    loop = asyncio.get_running_loop()
    up, failover = await _upstream(loop)
    resp, out, client = await _client_response(loop)
    record = RequestRecord("bench")
    keep: list[Any] | None = [] if cache else None
    task = asyncio.ensure_future(relay(
        resp, failover, OpenAIChunks(usage), record, keep,  # type: ignore[arg-type]
        lifecycle=Lifecycle(), out=out, write_timeout_s=30.0))
    words = [_event({"content": f" word{i}"}, null_usage=null_usage) for i in range(per_read)]
    reads = [b"".join(_http_chunk(w) for w in words) for _ in range(chunks // per_read)]
    for _ in range(50):  # the relay's task reaches its pushed tail
        await asyncio.sleep(0)
    writes_before = client.writes
    feed = up.data_received
    start = time.process_time()
    for read in reads:
        feed(read)
    elapsed = time.process_time() - start
    writes = client.writes - writes_before
    # The upstream's events are spaced JSON; a parsed and re-encoded chunk is compact.
    unparsed = client.last.count(b'{"id": "chatcmpl-bench"') == per_read
    feed(_http_chunk(_event({}, "stop") + USAGE + b"data: [DONE]\n\n") + b"0\r\n\r\n")
    whole = await task
    if not whole or record.usage is None or record.usage.completion_tokens != 20:
        raise RuntimeError(f"the relay did not end whole: {whole}, usage {record.usage}")
    if writes < len(reads):
        raise RuntimeError(f"{writes} client writes for {len(reads)} reads: chunks were lost")
    return {"us_per_chunk": elapsed * 1e6 / (len(reads) * per_read),
            "writes_per_read": writes / len(reads), "unparsed": float(unparsed)}


def child(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(_one_run(args.chunks, args.per_read, args.usage, args.cache,
                                 args.null_usage))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-read", type=int, default=1)
    parser.add_argument("--usage", action="store_true")
    parser.add_argument("--null-usage", action="store_true")
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--tree", type=Path, action="append")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    flags = [f"--chunks={args.chunks}", f"--per-read={args.per_read}",
             *(["--usage"] if args.usage else []), *(["--cache"] if args.cache else []),
             *(["--null-usage"] if args.null_usage else [])]
    runs: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", *flags],
                cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                check=True, capture_output=True, text=True).stdout
            runs[tree].append(json.loads(out))
    print(f"relay, {args.chunks} chunks, {args.per_read} a read, usage "
          f"{'asked' if args.usage else 'not asked'}, cache {'on' if args.cache else 'off'}; "
          f"null usage in chunks {'yes' if args.null_usage else 'no'}; {args.rounds} rounds")
    print("| tree | µs/chunk median | best | client writes per read | unparsed |")
    print("|---|---|---|---|---|")
    for tree, rs in runs.items():
        per = [r["us_per_chunk"] for r in rs]
        print(f"| {tree} | {statistics.median(per):.2f} | {min(per):.2f} | "
              f"{statistics.median(r['writes_per_read'] for r in rs):.2f} | "
              f"{'yes' if all(r['unparsed'] for r in rs) else 'no'} |")


if __name__ == "__main__":
    main()
