"""What observability costs a request: metrics calls, the access log line, and a scrape.

    .venv/bin/python bench/bench_metrics.py [--iterations 200000] [--json]

1. Per request, in-process: ``Metrics.request_done`` with every figure (route, tier, deployment,
   status, latency, upstream time, TTFT, tokens, cost) plus ``cache_result``, over a realistic
   spread of label sets (5 routes x 5 deployments x 3 statuses, children already bound), and the
   same with ``tenant_labels``. Goal: at most 20 microseconds together. ``best`` (the fastest
   batch) is the figure to compare between runs on a shared machine; ``request_calls`` counts
   the Python and C calls one request makes (``sys.setprofile``), which does not vary.
2. ``access_log_line`` with the logger on, writing JSON lines to /dev/null.
3. ``GET /metrics`` rendering time for the registry those requests filled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

from prometheus_client import generate_latest

from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.access_log import ACCESS_LOGGER, AccessEntry, access_log_line
from gateway.observability.metrics import CacheResult, Metrics

ROUTES = ("code", "chitchat", "math", "summarise", None)
DEPLOYMENTS = tuple(f"provider{i}/model-{i}" for i in range(5))
STATUSES = (200, 200, 200, 200, 429, 502)
CACHE: tuple[CacheResult, ...] = ("hit", "miss", "miss", "bypass")


def per_request(metrics: Metrics, iterations: int) -> list[float]:
    """Microseconds per request, measured over batches of 1,000 requests."""
    batch, out = 1000, []
    for start in range(0, iterations, batch):
        began = time.perf_counter_ns()
        for i in range(start, start + batch):
            metrics.request_done(
                ROUTES[i % 5], "cheap" if i % 2 else "reasoning", DEPLOYMENTS[i % 5 - 1],
                STATUSES[i % 6], 0.412, 0.39, 0.12 if i % 3 else None, 512, 128, 0.00021,
                "acme" if i % 2 else "globex",
            )
            metrics.cache_result(CACHE[i % 4], 0.0004, 0.0 if i % 4 else 0.0002)
        out.append((time.perf_counter_ns() - began) / batch / 1000)
    return out


def calls_per_request(metrics: Metrics) -> int:
    """Function calls (Python and C) in one ``request_done`` plus ``cache_result``."""
    args = ("code", "cheap", DEPLOYMENTS[0], 200, 0.412, 0.39, 0.12, 512, 128, 0.00021, "acme")
    metrics.request_done(*args)  # bind the label set first, as every later request finds it
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    metrics.request_done(*args)
    metrics.cache_result("miss", 0.0004)
    sys.setprofile(None)
    return calls - 1  # the setprofile(None) call itself


def access_lines(iterations: int) -> list[float]:
    logger = logging.getLogger(ACCESS_LOGGER)
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        settings = ObservabilitySettings()
        entry = AccessEntry(
            ts=time.time(), request_id="req_0123456789abcdef01234567", method="POST",
            path="/v1/chat/completions", status=200, latency_ms=412.3, tenant="acme",
            key_id="key_1a2b3c4d5e6f", route="code", tier="reasoning", model="auto",
            deployment="groq/llama-3.3-70b-versatile", cache="miss", stream=True, attempts=1,
            upstream_ms=390.1, ttft_ms=120.4, tokens_in=512, tokens_out=128, cost=0.00021,
        )
        batch, out = 1000, []
        for _ in range(0, iterations, batch):
            began = time.perf_counter_ns()
            for _ in range(batch):
                access_log_line(entry, settings)
            out.append((time.perf_counter_ns() - began) / batch / 1000)
        logger.removeHandler(handler)
    return out


def scrape_ms(metrics: Metrics, times: int = 50) -> list[float]:
    out = []
    for _ in range(times):
        began = time.perf_counter_ns()
        generate_latest(metrics.registry)
        out.append((time.perf_counter_ns() - began) / 1e6)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))],
            "mean": statistics.fmean(ordered), "best": ordered[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plain, labelled = Metrics(), Metrics(tenant_labels=True)
    results: dict[str, Any] = {
        "request_us": summary(per_request(plain, args.iterations)),
        "request_tenant_labels_us": summary(per_request(labelled, args.iterations)),
        "request_calls": calls_per_request(Metrics()),
        "access_log_us": summary(access_lines(args.iterations // 4)),
        "scrape_ms": summary(scrape_ms(plain)),
        "scrape_bytes": len(generate_latest(plain.registry)),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, value in results.items():
        if isinstance(value, dict):
            figures = ", ".join(f"{k} {v:.2f}" for k, v in value.items())
            print(f"{name:28} {figures}")
        else:
            print(f"{name:28} {value}")


if __name__ == "__main__":
    main()
