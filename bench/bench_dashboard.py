"""How long each dashboard page takes over a large ledger (the issue: ≤ 100 ms at 1,000,000 rows).

Fills a real SQLite tenants database through the gateway's own ledger writer (``Ledger.record``
and ``flush``, so whatever roll-ups the build keeps are filled the way a running gateway fills
them), spread over the last eight days with most traffic recent, then opens the real dashboard
app on it and times each page (overview per window, providers, tenants, requests) as a logged-in
browser would fetch it: the median and the worst of ``--repeat`` fetches, in milliseconds.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_dashboard.py --rows 1000000

Runs against whichever checkout ``PYTHONPATH`` points at, so a build before a change and one
after it can be compared side by side on the same machine. ``--db PATH`` keeps the filled
database for a second run (the schema must be the same build's).
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

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import errors_middleware
from gateway.core.observability_settings import ObservabilitySettings
from gateway.core.tenant_settings import LedgerSettings, TenantSettings
from gateway.observability.dashboard.site import setup_dashboard
from gateway.tenants.context import (
    AUTH_KEY,
    CONFIG_KEY,
    LEDGER_KEY,
    STORE_KEY,
    TenantsConfig,
    tenants_context,
)
from gateway.tenants.ledger import UsageRecord

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SECRET = "bench-key-secret-0123456789abcdef"
TENANTS = ("acme", "globex", "initech", "umbrella")
DEPLOYMENTS = (("llama-3.1-8b-instant", "groq/llama-3.1-8b-instant", "cheap"),
               ("gemini-2.0-flash", "gemini/gemini-2.0-flash", "cheap"),
               ("llama-3.3-70b", "groq/llama-3.3-70b-versatile", "reasoning"),
               ("claude-sonnet-4", "anthropic/claude-sonnet-4-0", "reasoning"))
ROUTES = ("code", "chitchat", "math", "summarise", None)
PAGES = ("/dashboard?window=1h", "/dashboard?window=24h", "/dashboard?window=7d",
         "/dashboard/providers", "/dashboard/tenants", "/dashboard/tenants?tenant=acme",
         "/dashboard/requests", "/dashboard/requests?status=error&window=7d")


def _row(rng: random.Random, i: int, ts: float) -> UsageRecord:
    model, deployment, tier = rng.choice(DEPLOYMENTS)
    status = rng.choices((200, 429, 502), weights=(92, 5, 3))[0]
    cache = rng.choices(("hit", "miss", "bypass"), weights=(20, 65, 15))[0]
    ok = status < 400
    latency = rng.lognormvariate(6.3, 0.7)
    return UsageRecord(
        request_id=f"req_{i:012x}", tenant=rng.choice(TENANTS), key_id="key_bench",
        model=rng.choice(("auto", model)), status=status, ts=ts, route=rng.choice(ROUTES),
        tier=tier, deployment=deployment if status != 429 else None,
        tokens_in=rng.randint(20, 2000) if ok else 0, tokens_out=rng.randint(5, 800) if ok else 0,
        cost=rng.random() / 1000 if ok else 0.0, cache=cache if status != 429 else None,
        saved_cost=0.0, escalations=int(rng.random() < 0.05), attempts=1,
        latency_ms=latency, ttft_ms=latency * 0.3 if rng.random() < 0.6 else None,
    )


def _times(rows: int, now: float, rng: random.Random) -> list[float]:
    """Half the rows in the last day, the rest over the week before: ~6,000 an hour at 1M."""
    out = [now - (rng.uniform(1, 86_400) if rng.random() < 0.5 else rng.uniform(86_400, 8 * 86_400))
           for _ in range(rows)]
    out.sort()
    return out


def _app(data_dir: Path, rows: int) -> web.Application:
    settings = TenantSettings(admin_key=ADMIN_KEY, key_secret=SECRET, bootstrap=False,
                              ledger=LedgerSettings(batch_rows=5000, max_pending_rows=60_000))
    app = web.Application(middlewares=[errors_middleware])
    app[CONFIG_KEY] = TenantsConfig(settings, data_dir)
    app.cleanup_ctx.append(tenants_context)
    setup_dashboard(app, ObservabilitySettings())
    return app


async def _fill(app: web.Application, rows: int) -> float:
    store, auth, ledger = app[STORE_KEY], app[AUTH_KEY], app[LEDGER_KEY]
    if await store.count_tenants():
        return time.time()
    for name in TENANTS:
        await store.create_tenant(name)
        await store.create_key(auth.secret, name)
    rng = random.Random(1)
    now = time.time()
    started = time.perf_counter()
    for i, ts in enumerate(_times(rows, now, rng)):
        ledger.record(_row(rng, i, ts))
        if ledger.pending >= 50_000:
            await ledger.flush()
    await ledger.flush()
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    return now


async def _time_pages(client: TestClient[web.Request, web.Application], repeat: int
                      ) -> dict[str, dict[str, float]]:
    out = {}
    for path in PAGES:
        times = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            response = await client.get(path)
            await response.read()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, (path, response.status)
        times = times[1:]  # the first fetch warms SQLite's page cache
        out[path] = {"median_ms": round(statistics.median(times), 1),
                     "max_ms": round(max(times), 1)}
        print(f"{path:50s} median {out[path]['median_ms']:8.1f} ms  max "
              f"{out[path]['max_ms']:8.1f} ms", flush=True)
    return out


async def main(rows: int, repeat: int, db: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = db or Path(tmp)
        app = _app(data_dir, rows)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await _fill(app, rows)
            login = await client.post("/dashboard/login", data={"key": ADMIN_KEY,
                                                                "next": "/dashboard"},
                                      allow_redirects=False)
            assert login.status in (302, 303), login.status
            pages = await _time_pages(client, repeat)
        finally:
            await client.close()
    return {"rows": rows, "repeat": repeat, "pages": pages}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None,
                        help="a folder to keep (and reuse) the filled database in")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rows, args.repeat, args.db)), indent=1))
