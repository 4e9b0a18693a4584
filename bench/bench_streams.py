"""Many concurrent streams through the gateway, side by side with the same streams direct.

    .venv/bin/python bench/bench_streams.py [--streams 1024 | --streams 256,512,768,1024]
        [--chunks 64] [--chunk-delay-ms 20] [--rounds 3] [--tree DIR ...]
        [--gateway-soft-nofile 1024] [--processes 1,2]

The fake upstream (``bench/fake_upstream.py``) answers each streaming request with ``--chunks``
content chunks ``--chunk-delay-ms`` apart. ``--streams`` clients start at once (one connection
each, uvloop) and each reads its stream, noting when every content chunk arrives; the same wave
runs in turn direct to the upstream and through each gateway: one per ``--tree`` (a checkout,
default this one; its code runs), the full keyed path, an explicit model, the default
configuration (``[server] max_connections`` 1024, one worker). ``--gateway-soft-nofile`` starts
the gateways with that soft open-files limit, as a distribution's default (1024) would.
``--processes 1,2`` runs one gateway of this checkout per count (``gateway serve --processes
N``, the supervisor and N processes on one port); with any count above one, every gateway of
the run shares a real Redis and PostgreSQL started here in temp folders (as the tests start
them), since several processes need them, so the counts differ only in their processes. A
gateway's CPU is summed over its whole process tree (supervisor, processes, embedding worker).

Per wave: streams that failed; time to the first content chunk and to the stream's end (p50,
p99); the gaps between consecutive chunks as a client saw them (p99 and the largest: a stall is a
gap of more than ``--stall-ms``, default three chunk spacings); the added p99 is a gateway's
stream-end p99 minus the direct one, medians over the rounds. Also the CPU the gateway, the
upstream and this client spent per content chunk in each wave (from /proc and getrusage): the
gateway's figure times ``streams * 1000 / chunk-delay-ms`` chunks a second is the share of its one
core it needs; the upstream's and the client's together are what the harness itself costs. The
client, the upstream and the gateway share the machine: the direct row carries the client's and
the upstream's own lag. ``--streams`` takes a comma-separated list to sweep: each count runs its
rounds in turn, with the same processes, and gets its own table. This process (and so the
upstream it starts) raises its own soft open-files limit to the hard one. The "cores" column
is what the gateway, the upstream and this client together spent per second of the wave's
chunks: against the machine's CPUs it says whether the harness left the gateway room.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_proxy import ADMIN_ENV, BODY, create_key, gateway_config
from procs import ROOT, free_port, start, stop, user_system_s, wait_port, wait_ready

from gateway.core.fd_limit import raise_open_files_limit
from tests.postgres_fixtures import create_database, running_postgres
from tests.redis_server import RedisServer, server_binary
from tests.replicas import descendants


@dataclass
class Stream:
    ok: bool
    first_ms: float
    end_ms: float
    gaps_ms: list[float]


class _StreamReader(asyncio.Protocol):
    """One streaming request on its own connection, read with as little client CPU as can be:
    a thousand Python clients parsing SSE would lag more than the gateway being measured. The
    time of each read is the arrival of every content chunk in it (a read holding two chunks
    is a gap of 0 after a longer one, as a client reading the socket would see it)."""

    def __init__(self, request: bytes, done: asyncio.Future[Stream]) -> None:
        self.request = request
        self.done = done
        self.started = 0.0
        self.arrivals: list[float] = []
        self.head = b""
        self.status_ok: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.started = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.status_ok is None:
            self.head += data
            if b"\r\n" not in self.head:
                return
            self.status_ok = self.head.startswith(b"HTTP/1.1 200")
            data = self.head
        self.arrivals.extend([now] * data.count(b"word"))
        if data.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked body
            self._finish(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(time.perf_counter())

    def _finish(self, now: float) -> None:
        if self.done.done():
            return
        arrivals = self.arrivals
        if not self.status_ok or not arrivals:
            self.done.set_result(Stream(False, 0.0, 0.0, []))
            return
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
        self.done.set_result(Stream(True, (arrivals[0] - self.started) * 1000,
                                    (now - self.started) * 1000, gaps))


def http_request(port: int, key: str | None) -> bytes:
    body = json.dumps({**BODY, "stream": True}).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{auth}"
            "Connection: close\r\n\r\n").encode() + body


async def one_stream(port: int, request: bytes, go: asyncio.Event) -> Stream:
    await go.wait()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Stream] = loop.create_future()
    try:
        transport, _ = await loop.create_connection(
            lambda: _StreamReader(request, done), "127.0.0.1", port)
    except OSError:
        return Stream(False, 0.0, 0.0, [])
    try:
        async with asyncio.timeout(120):
            return await done
    finally:
        transport.close()


async def wave(port: int, streams: int, key: str | None) -> list[Stream]:
    request = http_request(port, key)
    go = asyncio.Event()
    tasks = [asyncio.create_task(one_stream(port, request, go)) for _ in range(streams)]
    await asyncio.sleep(0)  # every task waits on the event: they all start together
    go.set()
    return await asyncio.gather(*tasks)


def summary(results: list[Stream], stall_ms: float) -> dict[str, float]:
    ok = [r for r in results if r.ok]
    gaps = [g for r in ok for g in r.gaps_ms]
    if not gaps:
        nan = float("nan")
        return {"failed": len(results) - len(ok), "first_p50_ms": nan, "first_p99_ms": nan,
                "end_p50_ms": nan, "end_p99_ms": nan, "gap_p99_ms": nan, "gap_max_ms": nan,
                "stalls": nan}

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)

    return {"failed": len(results) - len(ok),
            "first_p50_ms": statistics.median(r.first_ms for r in ok),
            "first_p99_ms": p99([r.first_ms for r in ok]),
            "end_p50_ms": statistics.median(r.end_ms for r in ok),
            "end_p99_ms": p99([r.end_ms for r in ok]),
            "gap_p99_ms": p99(gaps), "gap_max_ms": max(gaps),
            "stalls": sum(g > stall_ms for g in gaps)}


def run_wave(port: int, streams: int, key: str | None, stall_ms: float) -> dict[str, float]:
    import uvloop

    return summary(uvloop.run(wave(port, streams, key)), stall_ms)


def start_gateway(tree: Path, config: Path, port: int, soft_nofile: int | None,
                  processes: int = 1) -> subprocess.Popen[bytes]:
    """``gateway serve`` from ``tree``'s code, its soft open-files limit set when asked (as a
    distribution's default of 1024 would be)."""

    def limit() -> None:
        if soft_nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_nofile, hard))

    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
         "--processes", str(processes)],
        cwd=tree, env={**os.environ, **ADMIN_ENV, "PYTHONPATH": str(tree)}, preexec_fn=limit,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree_user_system_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid``'s whole tree (processes alive now)."""
    user = system = 0.0
    for member in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            u, s = user_system_s(member)
            user, system = user + u, system + s
    return user, system


def measured_wave(port: int, key: str | None, pids: dict[str, int], args: argparse.Namespace,
                  streams: int, stall_ms: float) -> dict[str, float]:
    split = {name: tree_user_system_s(pid) for name, pid in pids.items()}
    before = {name: sum(us) for name, us in split.items()}
    client_before = time.process_time()
    load_before = os.getloadavg()[0]
    result = run_wave(port, streams, key, stall_ms)
    chunks = streams * args.chunks
    result["client_cpu_us_per_chunk"] = (time.process_time() - client_before) * 1e6 / chunks
    result["load"] = max(load_before, os.getloadavg()[0])
    for name, pid in pids.items():
        user, system = tree_user_system_s(pid)
        result[f"{name}_cpu_us_per_chunk"] = (user + system - before[name]) * 1e6 / chunks
        result[f"{name}_user_us_per_chunk"] = (user - split[name][0]) * 1e6 / chunks
        result[f"{name}_system_us_per_chunk"] = (system - split[name][1]) * 1e6 / chunks
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", default="1024",
                        help="concurrent streams, or a comma-separated list to sweep")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stall-ms", type=float, default=None,
                        help="a gap longer than this is a stall (default: 3 chunk spacings)")
    parser.add_argument("--tree", type=Path, action="append",
                        help="a checkout whose gateway to run (repeatable; default: this one)")
    parser.add_argument("--gateway-soft-nofile", type=int, default=None,
                        help="start each gateway with this soft open-files limit")
    parser.add_argument("--processes", default="1",
                        help="gateway processes, or a comma-separated list: one gateway each")
    args = parser.parse_args()
    stall_ms = args.stall_ms or 3 * args.chunk_delay_ms
    counts = [int(n) for n in str(args.streams).split(",")]
    limits = raise_open_files_limit(max(counts))
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    processes = [int(n) for n in str(args.processes).split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    up_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port), "--chunks",
                      str(args.chunks), "--chunk-delay-ms", str(args.chunk_delay_ms)])
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    sweep: dict[int, dict[str, list[dict[str, float]]]] = {n: {"direct": []} for n in counts}
    try:
        wait_port(up_port)
        with cluster(tmp, max(processes) > 1) as cluster_lines:
            key = create_key(write_config(tmp / "key", up_port, cluster_lines))
            targets = [(tree, n) for tree in trees for n in processes]
            for tree, n in targets:
                name = f"gateway {tree}" + (f", {n} processes" if len(processes) > 1 else "")
                config = write_config(tmp / f"g{len(gateways)}", up_port, cluster_lines)
                port = free_port()
                gateways[name] = (
                    start_gateway(tree, config, port, args.gateway_soft_nofile, n), port)
                wait_port(port)
                asyncio.run(wait_all_ready(port, n))
                for runs in sweep.values():
                    runs[name] = []
            for streams, runs in sweep.items():
                run_rounds(streams, runs, args, upstream.pid, up_port, gateways, key, stall_ms)
            for proc, _ in gateways.values():
                stop(proc)
    finally:
        for proc, _ in gateways.values():
            stop(proc)
        stop(upstream)
    for streams, runs in sweep.items():
        report(args, streams, runs, stall_ms, limits.soft)


def write_config(folder: Path, up_port: int, cluster_lines: str) -> Path:
    """A gateway's configuration, with a data folder of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "gateway.toml"
    config.write_text(gateway_config(up_port, str(folder / "data")) + cluster_lines)
    return config


@contextlib.contextmanager
def cluster(folder: Path, needed: bool) -> Iterator[str]:
    """The ``[cluster]`` table of a real Redis and PostgreSQL in temp folders, when
    ``needed``; else nothing (every gateway embedded)."""
    if not needed:
        yield ""
        return
    (folder / "redis").mkdir()
    redis = RedisServer(server_binary(), folder / "redis", free_port())
    redis.start()
    try:
        with running_postgres() as postgres:
            url = asyncio.run(create_database(postgres, "bench"))
            yield f'\n[cluster]\nredis_url = "{redis.url}"\ndatabase_url = "{url}"\n'
    finally:
        redis.stop()


async def wait_all_ready(port: int, processes: int) -> None:
    """Until ``/readyz`` answers 200 on many fresh connections in a row: each process of a
    node is ready (the kernel picks one per connection)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/readyz"
    await wait_ready(url)
    in_a_row = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        while in_a_row < 8 * processes:
            async with s.get(url) as resp:
                in_a_row = in_a_row + 1 if resp.status == 200 else 0
            if not in_a_row:
                await asyncio.sleep(0.05)  # polling a start-up with no event to wait on


def run_rounds(streams: int, runs: dict[str, list[dict[str, float]]], args: argparse.Namespace,
               upstream_pid: int, up_port: int,
               gateways: dict[str, tuple[subprocess.Popen[bytes], int]], key: str,
               stall_ms: float) -> None:
    for _ in range(args.rounds):
        runs["direct"].append(measured_wave(up_port, None, {"upstream": upstream_pid},
                                            args, streams, stall_ms))
        for name, (proc, port) in gateways.items():
            pids = {"gateway": proc.pid, "upstream": upstream_pid}
            runs[name].append(measured_wave(port, key, pids, args, streams, stall_ms))
        for name, rs in runs.items():
            print(streams, name, json.dumps({k: round(v, 1) for k, v in rs[-1].items()}),
                  flush=True)


def report(args: argparse.Namespace, streams: int, runs: dict[str, list[dict[str, float]]],
           stall_ms: float, soft_limit: int) -> None:
    med = {name: {k: statistics.median(r.get(k, 0.0) for r in rs) for k in rs[0]}
           for name, rs in runs.items()}
    print(f"\n{streams} concurrent streams, {args.chunks} chunks {args.chunk_delay_ms:g} ms "
          f"apart; medians of {args.rounds} rounds; stall: a gap > {stall_ms:g} ms; "
          f"open-files soft limit {soft_limit} here, "
          f"{args.gateway_soft_nofile or 'raised by the gateway'} in the gateway at start; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| target | failed | first chunk p50 / p99 ms | stream end p50 / p99 ms | "
          "gap p99 ms | largest gap ms | stalls | CPU us/chunk gateway, upstream, client | "
          "gateway user / system us/chunk | cores: gateway + upstream + client | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    chunks_per_s = streams * 1000 / args.chunk_delay_ms
    for name, m in med.items():
        print(f"| {name} | {m['failed']:.0f} | {m['first_p50_ms']:.1f} / {m['first_p99_ms']:.1f}"
              f" | {m['end_p50_ms']:.1f} / {m['end_p99_ms']:.1f} | {m['gap_p99_ms']:.1f} | "
              f"{m['gap_max_ms']:.1f} | {m['stalls']:.0f} | "
              f"{m.get('gateway_cpu_us_per_chunk', 0.0):.1f}, "
              f"{m['upstream_cpu_us_per_chunk']:.1f}, {m['client_cpu_us_per_chunk']:.1f} | "
              f"{m.get('gateway_user_us_per_chunk', 0.0):.1f} / "
              f"{m.get('gateway_system_us_per_chunk', 0.0):.1f} | "
              f"{cores(m, 'gateway', chunks_per_s):.2f} + {cores(m, 'upstream', chunks_per_s):.2f}"
              f" + {cores(m, 'client', chunks_per_s):.2f} | {m['load']:.1f} |")
    for name in runs:
        if name != "direct":
            added = med[name]["end_p99_ms"] - med["direct"]["end_p99_ms"]
            print(f"added p99 (stream end, {name} - direct): {added:+.1f} ms")


def cores(figures: dict[str, float], who: str, chunks_per_s: float) -> float:
    """CPUs ``who`` kept busy at the wave's chunk rate."""
    return figures.get(f"{who}_cpu_us_per_chunk", 0.0) * chunks_per_s / 1e6


if __name__ == "__main__":
    main()
