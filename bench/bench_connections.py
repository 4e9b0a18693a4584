"""What the client-connection guards cost, side by side in one run.

    .venv/bin/python bench/bench_connections.py [--seconds 5] [--rounds 3]

The same app (demo provider, no embedder, keyless) runs in two processes: one on
``GuardedRunner`` (as ``gateway serve`` runs it: header, idle and connection-cap guards), one on
aiohttp's plain ``AppRunner``. wrk loads ``GET /healthz`` (the cheapest handler, so the guards'
share is the largest it can be) alternately on both, with keep-alive connections and with a new
connection per request. The figure is the server's CPU time per request (user plus system, from
/proc), which a busy machine disturbs far less than requests per second; medians over the
rounds. Compare the two columns of one run, not runs on different days.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from procs import cpu_s, free_port, start, stop, wait_port

CONFIG = """
[server]
data_dir = "{data_dir}"
[tenants]
require_keys = false
bootstrap = false
[cache]
enabled = false
[embedder]
enabled = false
[observability]
access_log = false
[[providers]]
name = "demo"
kind = "demo"
[[models]]
name = "bench"
provider = "demo"
tier = "cheap"
"""


async def _serve(mode: str, port: int, config: Path) -> None:
    from gateway.api.connections import GuardedRunner
    from gateway.app import create_app
    from gateway.core.config import load

    app = create_app(load(config))
    runner_class = GuardedRunner if mode == "guarded" else web.AppRunner
    runner = runner_class(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until the benchmark terminates this process


def wrk(url: str, seconds: float, close: bool) -> int:
    """Requests answered at 16 connections in ``seconds``."""
    args = ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if " requests in " in x)
    return int(line.split()[0])


def cpu_us_per_request(pid: int, url: str, seconds: float, close: bool) -> float:
    before = cpu_s(pid)
    requests = wrk(url, seconds, close)
    return (cpu_s(pid) - before) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=3, metavar=("MODE", "PORT", "CONFIG"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.install()
        asyncio.run(_serve(args.serve[0], int(args.serve[1]), Path(args.serve[2])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(CONFIG.format(data_dir=Path(tmp) / "data"))
        ports = {mode: free_port() for mode in ("plain", "guarded")}
        procs = [start([str(Path(__file__)), "--serve", mode, str(port), str(config)])
                 for mode, port in ports.items()]
        try:
            for port in ports.values():
                wait_port(port)
            results: dict[tuple[str, bool], list[float]] = {}
            for _ in range(args.rounds):
                for close in (False, True):
                    for (mode, port), proc in zip(ports.items(), procs, strict=True):
                        url = f"http://127.0.0.1:{port}/healthz"
                        results.setdefault((mode, close), []).append(
                            cpu_us_per_request(proc.pid, url, args.seconds, close))
        finally:
            for proc in procs:
                stop(proc)
    print("| connections | guarded CPU µs/request | plain CPU µs/request | guarded / plain |")
    print("|---|---|---|---|")
    for close in (False, True):
        guarded = statistics.median(results[("guarded", close)])
        plain = statistics.median(results[("plain", close)])
        label = "new per request" if close else "keep-alive"
        print(f"| {label} | {guarded:.1f} | {plain:.1f} | {guarded / plain:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
