"""The gateway's added cost over going direct to the same upstream, side by side in one run.

    .venv/bin/python bench/bench_proxy.py [--seconds 5] [--rounds 3] [--concurrency 1,16,64]
        [--modes json,stream] [--tracing] [--base DIR]

For each concurrency (1, 16, 64), non-streaming and streaming, the same load runs alternately
against the fake upstream directly and through the gateway (an explicit model: no routing, no
cache lookup). Non-streaming load comes from wrk (latency percentiles, requests/s); streaming
load from an aiohttp client that times the first content chunk. Also: the gateway's CPU time per
request (and its main thread's share: the rest is its SQLite writer threads), resident memory
idle and under load, and cold start (process start to first answer).
``--tracing`` turns OpenTelemetry on (every request sampled, spans and metrics exported to
``bench/otlp_sink.py``), to compare with the same run without it. ``--base DIR`` runs a second
gateway from another checkout (its code on ``PYTHONPATH``) as one more target, ``base``, so a
change is measured against the build before it in the same run, alternating round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from procs import ROOT, cpu_s, free_port, main_thread_cpu_s, rss_mib, start, stop, wait_port

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello there, benchmark!"}]}
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


ADMIN_ENV = {"GATEWAY_ADMIN_KEY": "bench-admin-key-0123456789abcdef",
             "GATEWAY_KEY_SECRET": "bench-key-secret-0123456789abcdef"}


def tracing_config(sink_port: int | None) -> str:
    if sink_port is None:
        return ""
    return f"""
[observability.tracing]
endpoint = "http://127.0.0.1:{sink_port}"
sampling_ratio = 1.0
"""


def start_sink(tracing: bool) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    if not tracing:
        return None, None
    port = free_port()
    sink = start(["bench/otlp_sink.py", "--port", str(port)])
    wait_port(port)
    return sink, port


def stop_sink(sink: subprocess.Popen[bytes] | None, port: int | None) -> None:
    """Stop the sink, first saying how much it received (proof the exports happened)."""
    if sink is None:
        return
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts", timeout=5) as resp:
        print(f"OTLP bytes received: {resp.read().decode()}", flush=True)
    stop(sink)


def gateway_config(upstream_port: int, data_dir: str) -> str:
    """The full request path for an explicit model: keys, limits, ledger, metrics, access log;
    the embedder runs (for routing), the cache is off (no lookup on this path)."""
    models = ROOT / "models" / "all-MiniLM-L6-v2"
    return f"""
[server]
data_dir = "{data_dir}"
[tenants]
bootstrap = false
[tenants.default_limits]
requests_per_minute = 100000000
tokens_per_minute = 10000000000
[cache]
enabled = false
[embedder]
model_dir = "{models}"
[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
[[models]]
name = "bench"
provider = "fake"
upstream_model = "bench-upstream"
tier = "cheap"
input_price_per_mtok = 0.1
output_price_per_mtok = 0.2
"""


def build_env(pythonpath: str | None = None) -> dict[str, str]:
    """The gateway's environment; ``pythonpath`` runs another checkout's code (``--base``)."""
    return {**ADMIN_ENV, **({"PYTHONPATH": pythonpath} if pythonpath else {})}


def create_key(config: Path, pythonpath: str | None = None) -> str:
    """A tenant and its key, made with the CLI before the gateway starts."""
    env = {**os.environ, **build_env(pythonpath)}
    cli = [sys.executable, "-m", "gateway", "--log-level", "WARNING"]
    subprocess.run([*cli, "tenants", "create", "bench", "--init", "--config", str(config)],
                   check=True, capture_output=True, env=env, cwd=ROOT)
    out = subprocess.run([*cli, "keys", "create", "bench", "--config", str(config)],
                         check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
    return next(line.strip() for line in out.splitlines() if line.startswith("gw-"))


def wrk_argv(url: str, concurrency: int, seconds: float, script: Path) -> list[str]:
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", str(script), url]


def wrk(url: str, concurrency: int, seconds: float, script: Path) -> dict[str, float]:
    out = subprocess.run(wrk_argv(url, concurrency, seconds, script),
                         capture_output=True, text=True, check=True).stdout
    return wrk_figures(out)


def wrk_figures(out: str) -> dict[str, float]:
    """p50/p99 (ms), requests/s, requests and non-2xx answers from wrk's ``--latency`` output."""
    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50_ms": pct("50"), "p99_ms": pct("99"), "rps": rps, "requests": total,
            "errors": int(errors.group(1)) if errors else 0}


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, data=body) as r:
        async for line in r.content:
            if not first and b"word0" in line:
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


async def stream_load(
    url: str, concurrency: int, seconds: float, key: str
) -> dict[str, float]:
    body = json.dumps({**BODY, "stream": True}).encode()
    ttfb: list[float] = []
    total: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            first, whole = await _one_stream(session, url, body)
            ttfb.append(first)
            total.append(whole)

    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(ttfb, n=100)
    return {"ttfb_p50_ms": statistics.median(ttfb), "ttfb_p99_ms": q[98],
            "p50_ms": statistics.median(total), "rps": len(total) / elapsed,
            "requests": len(total)}


def cold_start(
    config: Path, key: str, pythonpath: str | None = None
) -> tuple[float, subprocess.Popen[bytes], int]:
    """Seconds from process start to the first successful answer."""
    port = free_port()
    body = json.dumps(BODY).encode()
    started = time.perf_counter()
    proc = start(["-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
                 env=build_env(pythonpath))
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    import urllib.request

    while True:
        try:
            req = urllib.request.Request(url, data=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started, proc, port
        except OSError:
            time.sleep(0.005)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--tracing", action="store_true",
                        help="export every request's spans and metrics to an OTLP sink")
    parser.add_argument("--base", help="another checkout, run side by side as 'base'")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    up_port = free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port), "--chunks", "20"])
    wait_port(up_port)
    config = tmp / "gateway.toml"
    sink, sink_port = start_sink(args.tracing)
    config.write_text(gateway_config(up_port, str(tmp / "data")) + tracing_config(sink_port))
    key = create_key(config)
    cold_s, gateway, gw_port = cold_start(config, key)
    idle_rss = rss_mib(gateway.pid)
    script = tmp / "post.lua"
    script.write_text(LUA % (json.dumps(BODY), key))
    floor_port = free_port()
    floor = start(["bench/floor_proxy.py", "--port", str(floor_port),
                   "--upstream", f"http://127.0.0.1:{up_port}"])
    wait_port(floor_port)
    targets = {"direct": f"http://127.0.0.1:{up_port}/v1/chat/completions",
               "floor": f"http://127.0.0.1:{floor_port}/v1/chat/completions",
               "gateway": f"http://127.0.0.1:{gw_port}/v1/chat/completions"}
    pids = {"floor": floor.pid, "gateway": gateway.pid}
    base = start_base(args.base, tmp, up_port, sink_port) if args.base else None
    if base is not None:
        cold_base, proc, port, base_key = base
        print(f"cold start: gateway {cold_s:.2f} s, base {cold_base:.2f} s", flush=True)
        targets["base"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        pids["base"] = proc.pid
        base_script = tmp / "base.lua"
        base_script.write_text(LUA % (json.dumps(BODY), base_key))
    keys = {name: key for name in targets}
    scripts = {name: script for name in targets}
    if base is not None:
        keys["base"], scripts["base"] = base_key, base_script
    results: dict[str, dict[str, float]] = {}
    peak_rss = idle_rss
    try:
        for c in [int(x) for x in args.concurrency.split(",")]:
            for mode in args.modes.split(","):
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, url in targets.items():
                        r = one_load(mode, url, c, args.seconds, keys[name], scripts[name],
                                     pids.get(name))
                        if name == "gateway":
                            peak_rss = max(peak_rss, rss_mib(gateway.pid))
                        runs[name].append(r)
                for name in runs:
                    results[f"{mode} c={c} {name}"] = median_of(runs[name])
                print_row(mode, c, results)
    finally:
        stop(gateway)
        if base is not None:
            stop(base[1])
        stop(floor)
        stop(upstream)
        stop_sink(sink, sink_port)
    print(f"\ncold start (process start to first answer): {cold_s:.2f} s")
    print(f"gateway RSS idle: {idle_rss:.0f} MiB, under load (peak): {peak_rss:.0f} MiB")
    (Path("bench/out")).mkdir(parents=True, exist_ok=True)
    Path("bench/out/proxy.json").write_text(json.dumps(
        {"results": results, "cold_start_s": cold_s, "rss_idle_mib": idle_rss,
         "rss_peak_mib": peak_rss}, indent=2))


def one_load(
    mode: str, url: str, c: int, seconds: float, key: str, script: Path, pid: int | None
) -> dict[str, float]:
    """One round against one target; with ``pid``, that process's CPU per request too."""
    before = cpu_s(pid) if pid else 0.0
    main_before = main_thread_cpu_s(pid) if pid else 0.0
    if mode == "json":
        r = wrk(url, c, seconds, script)
    else:
        r = asyncio.run(stream_load(url, c, seconds, key))
    if pid:
        r["cpu_ms_per_req"] = (cpu_s(pid) - before) * 1000 / r["requests"]
        r["loop_cpu_ms_per_req"] = (main_thread_cpu_s(pid) - main_before) * 1000 / r["requests"]
    return r


def start_base(
    checkout: str, tmp: Path, up_port: int, sink_port: int | None
) -> tuple[float, subprocess.Popen[bytes], int, str]:
    """The gateway of another checkout, with its own data: cold start, process, port, key."""
    (tmp / "base").mkdir()
    config = tmp / "base" / "gateway.toml"
    config.write_text(gateway_config(up_port, str(tmp / "base" / "data"))
                      + tracing_config(sink_port))
    key = create_key(config, checkout)
    cold_s, proc, port = cold_start(config, key, checkout)
    return cold_s, proc, port, key


def print_row(mode: str, c: int, results: dict[str, dict[str, float]]) -> None:
    d = results[f"{mode} c={c} direct"]
    for name in ("floor", "gateway", "base"):
        if f"{mode} c={c} {name}" not in results:
            continue
        g = results[f"{mode} c={c} {name}"]
        line = (f"{mode:6} c={c:<3} {name:8} p50 +{g['p50_ms'] - d['p50_ms']:.2f} ms"
                f" (direct {d['p50_ms']:.2f})")
        if "p99_ms" in d:
            line += f" | p99 +{g['p99_ms'] - d['p99_ms']:.2f} ms"
        if "ttfb_p50_ms" in d:
            line += f" | first chunk +{g['ttfb_p50_ms'] - d['ttfb_p50_ms']:.2f} ms"
        line += (f" | rps {g['rps']:.0f} (direct {d['rps']:.0f})"
                 f" | cpu {g['cpu_ms_per_req']:.3f} ms/req (main thread"
                 f" {g['loop_cpu_ms_per_req']:.3f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
