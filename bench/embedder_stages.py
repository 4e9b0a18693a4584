"""Where a single query's time over the embedding worker's socket goes, stage by stage.

    .venv/bin/python bench/embedder_stages.py [--queries 200] [--gap-ms 5]

Single queries, each after ``--gap-ms`` of idle (as a gateway between requests), to a worker
whose server methods are wrapped with timestamps (``time.perf_counter``: CLOCK_MONOTONIC, the
same clock in every process), once with the gateway's client (``WorkerConnection`` on uvloop, as
``gateway serve`` runs it) and once with a plain blocking socket. Per query, p50 over the queries:

- send: the caller starts the call -> the worker's ``data_received`` (both wake-ups of the
  worker and, for the asyncio client, its own work before the write);
- parse: -> tokenizing starts (frame, request, batcher); tokenize, infer: the model's own time;
- to infer: tokenized -> inference starts; reply: inference done -> the reply handed to the
  socket; write+back: -> the caller has its vectors (the caller's wake-up and its work).

The same with a bare worker (``run_bare_worker``: the least a Python worker can do, everything
inside ``data_received``), and the floor of this machine with no Python work at all: two
processes on a socket pair, blocking, the server busy for the model's time before it answers,
after the same idle gap.
Prints a Markdown table. The worker is started with the default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder_worker import protocol  # noqa: E402
from embedder_worker.client import WorkerConnection  # noqa: E402

MODEL = ROOT / "models/all-MiniLM-L6-v2"
STAGES = ("send", "parse", "tokenize", "to infer", "infer", "reply", "write+back")


def run_instrumented_worker(stamps_file: Path, argv: list[str]) -> int:
    """The worker, with each stage's start stamped; the stamps are written at exit."""
    import atexit

    from embedder_worker import server
    from embedder_worker.__main__ import main
    from embedder_worker.model import OnnxEmbedder

    stamps: list[tuple[str, float]] = []

    def stamped(cls: type, name: str, before: str, after: str | None = None) -> None:
        original = getattr(cls, name)

        def wrapper(*args: object) -> object:
            stamps.append((before, time.perf_counter()))
            result = original(*args)
            if after:
                stamps.append((after, time.perf_counter()))
            return result

        setattr(cls, name, wrapper)

    stamped(server._Connection, "data_received", "received")
    stamped(OnnxEmbedder, "encode", "encode", "encoded")
    stamped(server.MicroBatcher, "_timed_infer", "infer", "inferred")
    stamped(server._Connection, "send", "send")
    atexit.register(lambda: stamps_file.write_text(json.dumps(stamps)))
    sys.argv = ["embedder_worker", *argv]
    return main()


def run_bare_worker(stamps_file: Path, path: str) -> int:
    """The least a Python worker can do, for comparison: one connection, and the frame parsed,
    the text tokenized and embedded and the reply written inside ``data_received`` (no batcher,
    no request objects, one frame per read), on uvloop; stamped like the real one."""
    import uvloop

    from embedder_worker.model import OnnxEmbedder

    model = OnnxEmbedder(MODEL)
    model.warm_up()
    stamps: list[tuple[str, float]] = []
    done = asyncio.Event()

    class Bare(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

        def data_received(self, data: bytes) -> None:
            stamps.append(("received", time.perf_counter()))
            reader = protocol.FrameReader()
            reader.feed(data)
            frame = reader.next_frame()
            assert frame is not None
            if frame.type is protocol.FrameType.INFO:  # the gateway's client asks once, first
                stamps.pop()
                self.transport.write(protocol.encode_info(frame.request_id, {
                    "name": model.name, "dim": model.dim, "max_length": model.max_length,
                    "pooling": model.pooling, "normalize": model.normalize}))
                return
            texts = protocol.decode_embed(frame)
            stamps.append(("encode", time.perf_counter()))
            encoded = model.encode(texts)
            stamps.append(("encoded", time.perf_counter()))
            stamps.append(("infer", time.perf_counter()))
            vectors = model.infer(encoded)
            stamps.append(("inferred", time.perf_counter()))
            reply = protocol.encode_result(frame.request_id, vectors, [e.length for e in encoded])
            stamps.append(("send", time.perf_counter()))
            self.transport.write(reply)

        def connection_lost(self, exc: Exception | None) -> None:
            done.set()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_unix_server(Bare, path)
        print("READY", flush=True)
        await done.wait()
        server.close()

    uvloop.run(serve())
    stamps_file.write_text(json.dumps(stamps))
    return 0


def _recv_frame(sock: socket.socket) -> None:
    data = b""
    while len(data) < protocol.HEADER_SIZE:
        data += sock.recv(1 << 16)
    size = protocol.parse_header(data).body_len
    while len(data) < protocol.HEADER_SIZE + size:
        data += sock.recv(1 << 16)


async def _asyncio_calls(path: Path, texts: list[str], gap_s: float) -> list[tuple[float, float]]:
    conn = await WorkerConnection.open(path)
    calls = []
    try:
        for text in texts:
            await asyncio.sleep(gap_s)
            started = time.perf_counter()
            await conn.embed([text])
            calls.append((started, time.perf_counter()))
    finally:
        await conn.close()
    return calls


def _blocking_calls(path: Path, texts: list[str], gap_s: float) -> list[tuple[float, float]]:
    calls = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        for i, text in enumerate(texts, start=1):
            time.sleep(gap_s)
            started = time.perf_counter()
            sock.sendall(protocol.encode_embed(i, [text]))
            _recv_frame(sock)
            calls.append((started, time.perf_counter()))
    return calls


def stages(worker_kind: str, client: str, texts: list[str], gap_s: float,
           run_dir: Path) -> dict[str, float]:
    """p50 of each stage (seconds) for single queries through one stamped worker: the real one
    (``worker``) or the bare one (``bare``)."""
    name = f"{worker_kind}-{client}"
    path, stamps_file = run_dir / f"{name}.sock", run_dir / f"{name}.json"
    args = (["--worker", str(stamps_file), "--socket", str(path), "--model", str(MODEL),
             "--log-level", "WARNING"] if worker_kind == "worker"
            else ["--bare-worker", str(stamps_file), str(path)])
    worker = subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None
        if not worker.stdout.readline().startswith(b"READY"):
            raise RuntimeError("worker did not start")
        if client == "asyncio":
            import uvloop  # as ``gateway serve`` runs

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                calls = runner.run(_asyncio_calls(path, texts, gap_s))
        else:
            calls = _blocking_calls(path, texts, gap_s)
    finally:
        if worker_kind == "worker":  # the bare one ends with its connection
            worker.terminate()
        worker.wait(timeout=60)
    first = calls[0][0]
    by_kind: dict[str, list[float]] = {}
    for kind, at in json.loads(stamps_file.read_text()):
        if at >= first:  # not the warm-up, nor the client's INFO at connect
            by_kind.setdefault(kind, []).append(at)
    rows = []
    for i, (started, done) in enumerate(calls):
        at = {kind: times[i] for kind, times in by_kind.items()}
        rows.append({
            "send": at["received"] - started, "parse": at["encode"] - at["received"],
            "tokenize": at["encoded"] - at["encode"], "to infer": at["infer"] - at["encoded"],
            "infer": at["inferred"] - at["infer"], "reply": at["send"] - at["inferred"],
            "write+back": done - at["send"], "total": done - started,
            "over the model": done - started - (at["encoded"] - at["encode"])
            - (at["inferred"] - at["infer"]),
        })
    rows = rows[len(rows) // 10:]  # the first tenth warms up
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def socket_floor(busy_s: float, gap_s: float, count: int) -> float:
    """p50 round trip minus ``busy_s`` for a blocking socket pair whose server is busy for
    ``busy_s`` before it answers: two process wake-ups and the syscalls, nothing else."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the server
        ours.close()
        while data := theirs.recv(64):
            until = time.perf_counter() + busy_s
            while time.perf_counter() < until:
                pass
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    times = []
    for _ in range(count):
        time.sleep(gap_s)
        started = time.perf_counter()
        ours.sendall(b"x" * 32)
        ours.recv(64)
        times.append(time.perf_counter() - started - busy_s)
    ours.close()
    os.waitpid(pid, 0)
    return statistics.median(times[count // 10:])


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return run_instrumented_worker(Path(sys.argv[2]), sys.argv[3:])
    if len(sys.argv) > 3 and sys.argv[1] == "--bare-worker":
        return run_bare_worker(Path(sys.argv[2]), sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    args = parser.parse_args()
    texts = [f"How do I reset the password of account number {i}?" for i in range(args.queries)]
    gap_s = args.gap_ms / 1000
    columns = [("worker", "asyncio"), ("worker", "blocking"), ("bare", "asyncio"),
               ("bare", "blocking")]
    with tempfile.TemporaryDirectory(prefix="embedder-stages-") as tmp:
        measured = [stages(kind, client, texts, gap_s, Path(tmp)) for kind, client in columns]
    model_s = measured[1]["tokenize"] + measured[1]["infer"]
    floor = socket_floor(model_s, gap_s, args.queries)
    print(f"Single queries after {args.gap_ms:g} ms idle, p50 per stage (us); "
          f"{args.queries} queries each:\n")
    print("| stage | worker, gateway's client (uvloop) | worker, blocking client "
          "| bare worker, gateway's client | bare worker, blocking client |\n|---|---|---|---|---|")
    for key in (*STAGES, "total", "over the model"):
        print(f"| {key} | " + " | ".join(f"{m[key] * 1e6:.0f}" for m in measured) + " |")
    print(f"\nFloor (blocking socket pair, no Python work, server busy {model_s * 1e3:.1f} ms): "
          f"{floor * 1e6:.0f} us over the busy time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
