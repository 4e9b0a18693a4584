"""What routing and the cache add end to end, through a running gateway (c=1, side by side).

    .venv/bin/python bench/bench_e2e.py [--requests 300]

Against the fast fake upstream, one gateway with its embedder worker, the shipped routes and the
cache, alternating request kinds so that drift hits them alike:

- explicit: an explicit model with the cache bypassed (``Cache-Control: no-cache, no-store``);
- auto: ``model: "auto"`` with the cache bypassed, each prompt distinct (no embedding LRU hit);
- hit: a cached answer served again (exact hit; its embedding comes from the worker's LRU);
- semantic: a paraphrase of a stored prompt (GPTCache's paraphrase pairs, ``origin`` stored before
  the run, ``similar`` asked once each), counted when the gateway says ``semantic`` hit; its
  embedding is computed (a text never seen before).

Reported: p50/p99 latency per kind, and from ``Server-Timing`` the embedding's own p50 (of auto
and of the semantic hits), so that "auto adds at most the embedding plus 1 ms" and "a hit is
served in 5 ms plus the embedding" can be read off one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_proxy import ADMIN_ENV, create_key, gateway_config
from procs import ROOT, free_port, start, stop, wait_port, wait_ready

BYPASS = {"Cache-Control": "no-cache, no-store"}


def prompts(n: int) -> list[str]:
    data = json.loads((ROOT.parent / "shared/data/clinc150/val.json").read_text())["val"]
    return [text for text, _ in data[:n]]


def paraphrases(n: int) -> list[tuple[str, str]]:
    data = json.loads((ROOT.parent / "shared/data/qqp/paraphrase_pairs.json").read_text())
    return [(pair["origin"], pair["similar"]) for pair in data[:n]]


def config(up_port: int, data_dir: str) -> str:
    text = gateway_config(up_port, data_dir)
    return text.replace("[cache]\nenabled = false\n", "[cache]\nenabled = true\n")


def stage_ms(header: str, name: str) -> float | None:
    for part in header.split(","):
        stage, _, dur = part.strip().partition(";dur=")
        if stage == name:
            return float(dur)
    return None


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, object],
              headers: dict[str, str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
        cache = f"{resp.headers.get('x-gateway-cache', '')} " \
                f"{resp.headers.get('x-gateway-cache-kind', '')}".strip()
        return ((time.perf_counter() - started) * 1000, resp.headers.get("Server-Timing", ""),
                cache)


async def run(url: str, key: str, n: int) -> dict[str, list[float]]:
    texts = prompts(n)
    pairs = paraphrases(n)
    out: dict[str, list[float]] = {"explicit": [], "auto": [], "hit": [], "embed": [],
                                   "semantic": [], "semantic_embed": []}
    hit_body = _ask("What is a cache?")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        await one(session, url, hit_body, {})  # store it
        for stored, _ in pairs:
            await one(session, url, _ask(stored), {})
        await asyncio.sleep(0.5)  # the cache writes in batches every 0.2 s
        for text, (_, asked) in zip(texts, pairs, strict=False):
            msg = [{"role": "user", "content": text}]
            ms, _, _ = await one(session, url, {"model": "bench", "messages": msg}, BYPASS)
            out["explicit"].append(ms)
            ms, timing, _ = await one(session, url, {"model": "auto", "messages": msg}, BYPASS)
            out["auto"].append(ms)
            if (embed := stage_ms(timing, "embed")) is not None:
                out["embed"].append(embed)
            ms, _, cache = await one(session, url, hit_body, {})
            assert cache == "hit exact", cache
            out["hit"].append(ms)
            ms, timing, cache = await one(session, url, _ask(asked), {})
            if cache == "hit semantic" and (embed := stage_ms(timing, "embed")) is not None:
                out["semantic"].append(ms)
                out["semantic_embed"].append(embed)
    return out


def _ask(text: str) -> dict[str, object]:
    return {"model": "bench", "messages": [{"role": "user", "content": text}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    up_port, gw_port = free_port(), free_port()
    upstream = start(["bench/fake_upstream.py", "--port", str(up_port)])
    wait_port(up_port)
    cfg = tmp / "gateway.toml"
    cfg.write_text(config(up_port, str(tmp / "data")))
    key = create_key(cfg)
    gateway = start(["-m", "gateway", "serve", "--config", str(cfg), "--port", str(gw_port)],
                    env=ADMIN_ENV)
    try:
        wait_port(gw_port)
        asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/readyz"))
        out = asyncio.run(run(f"http://127.0.0.1:{gw_port}/v1/chat/completions", key,
                              args.requests))
    finally:
        stop(gateway)
        stop(upstream)
    for name, values in out.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:9} p50 {statistics.median(values):6.2f} ms  p99 {q[98]:6.2f} ms")
    p50 = {k: statistics.median(v) for k, v in out.items()}
    print(f"auto - explicit = {p50['auto'] - p50['explicit']:.2f} ms "
          f"(embedding p50 {p50['embed']:.2f} ms; goal: at most embedding + 1 ms)")
    rest = statistics.median(s - e for s, e in zip(out["semantic"], out["semantic_embed"],
                                                   strict=True))
    print(f"semantic hits: {len(out['semantic'])} of {args.requests} paraphrases; p50 of each hit "
          f"less its own embedding {rest:.2f} ms (goal: at most 5 ms)")


if __name__ == "__main__":
    main()
