"""Where the gateway's slowest requests lose their time: a tail tracer for c=1.

    .venv/bin/python bench/tail_trace.py [--seconds 4] [--rounds 3] [--base DIR] [--base-toml TOML]

A closed loop of one client (a blocking keep-alive socket, so the client adds little of its own)
sends the bench's explicit-model request alternately to the fake upstream directly, to
``floor_proxy.py`` and to the gateway, run under ``traced_gateway.py``. Every request's send and
receive times are kept (``time.perf_counter``: CLOCK_MONOTONIC, shared by the processes), and so
is the gateway's ``Server-Timing`` header. The gateway's trace gives the windows of its garbage
collections, ledger writes, routing signal writes, access log flushes and handler runs. For the
slowest 1% of gateway requests the report says how many overlapped each kind of event,
against the same share among all requests, and where their time went: inside the handler, or
before and after it.
Every gateway's CPU per request is reported too. ``--base DIR`` traces a second gateway from
another checkout beside the first; ``--base-toml`` appends configuration to that second one
(with or without ``--base``: e.g. ``'\n[routing]\nsignals = false\n'`` to see what the
signal store costs).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_proxy import BODY, build_env, create_key, gateway_config
from procs import cpu_s, free_port, start, stop, wait_port, wait_ready

Sample = tuple[float, float, str]


def request_bytes(port: int, key: str) -> bytes:
    body = json.dumps(BODY).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> bytes:
    """One HTTP/1.1 response with a Content-Length; its head (the body is only counted)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += sock.recv(65536)
    head = bytes(buf[:end])
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(buf) < end + 4 + length:
        buf += sock.recv(65536)
    del buf[:end + 4 + length]
    return head


def server_timing(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"server-timing:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def closed_loop(port: int, key: str, seconds: float) -> list[Sample]:
    payload = request_bytes(port, key)
    samples: list[Sample] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for _ in range(50):  # warm the connection and both ends' caches
            sock.sendall(payload)
            read_response(sock, buf)
        deadline = time.perf_counter() + seconds
        while (t0 := time.perf_counter()) < deadline:
            sock.sendall(payload)
            head = read_response(sock, buf)
            samples.append((t0, time.perf_counter(), server_timing(head)))
    return samples


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def overlaps(windows: list[tuple[float, float]], t0: float, t1: float) -> bool:
    """Whether any window (sorted by start) intersects [t0, t1]."""
    i = bisect.bisect_left(windows, (t1, float("inf")))
    return any(w[1] >= t0 for w in windows[max(0, i - 8):i])


def stage_ms(timing: str, name: str) -> float:
    for part in timing.split(", "):
        if part.startswith(name + ";dur="):
            return float(part.split("=", 1)[1])
    return 0.0


def percentiles(samples: dict[str, list[Sample]]) -> None:
    lat = {name: [(t1 - t0) * 1000 for t0, t1, _ in s] for name, s in samples.items()}
    for name, values in lat.items():
        d = lat["direct"]
        print(f"{name:8} n={len(values):6} p50 {pct(values, 50):.3f} p90 {pct(values, 90):.3f} "
              f"p99 {pct(values, 99):.3f} p99.9 {pct(values, 99.9):.3f} ms"
              + ("" if name == "direct" else
                 f" | added p50 +{pct(values, 50) - pct(d, 50):.3f} p99 "
                 f"+{pct(values, 99) - pct(d, 99):.3f}"))


def report(name: str, samples: list[Sample], trace: dict[str, Any]) -> None:
    """Which events the slowest 1% of ``samples`` overlapped, and where their time went."""
    gw = sorted(samples, key=lambda s: s[1] - s[0])
    slow, cut = gw[-max(1, len(gw) // 100):], len(gw) // 100
    kinds: dict[str, list[tuple[float, float]]] = {
        f"gc gen{g}": sorted((a, b) for a, b, gen in trace["gc"] if gen == g) for g in (0, 1, 2)}
    kinds["ledger write"] = sorted(map(tuple, trace["ledger"]))  # type: ignore[arg-type]
    kinds["signals write"] = sorted(map(tuple, trace["signals"]))  # type: ignore[arg-type]
    kinds["log flush"] = sorted(map(tuple, trace["log_flush"]))  # type: ignore[arg-type]
    print(f"\n{name}: slowest 1% of requests: {len(slow)} of {len(gw)} (> "
          f"{(gw[-cut][1] - gw[-cut][0]) * 1000:.3f} ms)")
    for kind, windows in kinds.items():
        if not windows:
            continue
        durs = [(b - a) * 1000 for a, b in windows]
        in_slow = sum(overlaps(windows, t0, t1) for t0, t1, _ in slow)
        in_all = sum(overlaps(windows, t0, t1) for t0, t1, _ in gw)
        print(f"  {kind:13} {len(windows):6} events, median {statistics.median(durs):.3f} ms, "
              f"max {max(durs):.3f} ms | overlap: slowest 1% {in_slow / len(slow):6.1%}, "
              f"all {in_all / len(gw):6.1%}")
    handlers = sorted(map(tuple, trace["handler"]))  # type: ignore[arg-type]
    for label, group in (("all", gw), ("slowest 1%", slow)):
        print(f"  {label:11} median: " + where_time_went(group, handlers))


def where_time_went(group: list[Sample], handlers: list[tuple[float, ...]]) -> str:
    """Client time split into the handler's and the rest; the loop thread's CPU in the handler,
    its voluntary context switches (waits) and the share of requests the kernel preempted."""
    starts = [h[0] for h in handlers]
    inside, cpu, waits, preempted, gws, ups = [], [], [], 0, [], []
    for t0, t1, timing in group:
        i = bisect.bisect_left(starts, t0)
        if i < len(handlers) and handlers[i][1] <= t1:
            h = handlers[i]
            inside.append((h[1] - h[0]) * 1000)
            cpu.append(h[2] * 1000)
            waits.append(h[3])
            preempted += h[4] > 0
        gws.append(stage_ms(timing, "gw"))
        ups.append(stage_ms(timing, "upstream"))
    total = statistics.median((t1 - t0) * 1000 for t0, t1, _ in group)
    handler = statistics.median(inside)
    return (f"client {total:.3f} ms = handler {handler:.3f} (gateway stages "
            f"{statistics.median(gws):.3f} + upstream {statistics.median(ups):.3f}) + outside "
            f"{total - handler:.3f} | loop thread in handler: CPU {statistics.median(cpu):.3f} "
            f"ms, {statistics.median(waits):.0f} waits, preempted in {preempted / len(inside):.1%}")


def traced_gateway(
    tmp: Path, name: str, up_port: int, pythonpath: str | None, extra_toml: str = ""
) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """A gateway under ``traced_gateway.py``: its process, port, key and trace file."""
    (tmp / name).mkdir()
    config = tmp / name / "gateway.toml"
    config.write_text(gateway_config(up_port, str(tmp / name / "data")) + extra_toml)
    key = create_key(config, pythonpath)
    trace_file, port = tmp / name / "trace.json", free_port()
    proc = start(["bench/traced_gateway.py", str(trace_file), "serve", "--config", str(config),
                  "--port", str(port)], env=build_env(pythonpath))
    return proc, port, key, trace_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", help="another checkout to trace side by side, as 'base'")
    parser.add_argument("--base-toml", default="",
                        help="configuration appended for 'base' (with or without --base)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    up_port, floor_port = free_port(), free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port), "--chunks", "20"])
    floor = start(["bench/floor_proxy.py", "--port", str(floor_port),
                   "--upstream", f"http://127.0.0.1:{up_port}"])
    gateways = {"gateway": traced_gateway(tmp, "gateway", up_port, None)}
    if args.base or args.base_toml:
        gateways["base"] = traced_gateway(tmp, "base", up_port, args.base,
                                          args.base_toml.replace("\\n", "\n"))
    ports = {"direct": up_port, "floor": floor_port,
             **{name: g[1] for name, g in gateways.items()}}
    keys = {name: g[2] for name, g in gateways.items()}
    samples: dict[str, list[Sample]] = {name: [] for name in ports}
    cpu = dict.fromkeys(gateways, 0.0)
    try:
        for port in ports.values():
            wait_port(port)
        for name in gateways:
            asyncio.run(wait_ready(f"http://127.0.0.1:{ports[name]}/readyz"))
        for _ in range(args.rounds):
            for name, port in ports.items():
                pid = gateways[name][0].pid if name in gateways else None
                before = cpu_s(pid) if pid else 0.0
                samples[name] += closed_loop(port, keys.get(name, ""), args.seconds)
                if pid:
                    cpu[name] += cpu_s(pid) - before
    finally:
        for proc, *_ in gateways.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stop(floor)
        stop(upstream)
    percentiles(samples)
    for name, seconds in cpu.items():  # the warm-up requests are few: counted, not added
        print(f"{name} CPU per request: {seconds * 1000 / len(samples[name]):.3f} ms")
    for name, (*_, trace_file) in gateways.items():
        report(name, samples[name], json.loads(trace_file.read_text()))


if __name__ == "__main__":
    main()
