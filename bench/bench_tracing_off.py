"""What tracing costs a request when it is off: the calls the request path still makes.

    .venv/bin/python bench/bench_tracing_off.py [--calls 1000000] [--repeats 3]

With ``[observability.tracing]`` unset, each upstream attempt still asks the no-op tracer for
its span, passes the headers through ``inject``, releases and ends the span, and the accounting
stage looks the tracer up on the app once. This times exactly those calls per request, to set
beside the gateway's CPU per request in ``bench_proxy.py`` (hundreds of microseconds).
"""

from __future__ import annotations

import argparse
import timeit

from aiohttp import web

from gateway.observability.tracing import TRACING_KEY
from gateway.upstream.attempt_trace import NO_TRACING


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    app = web.Application()
    headers = {"Content-Type": "application/json"}

    def one_request() -> None:
        span = NO_TRACING.attempt(None, None)  # type: ignore[arg-type]
        span.watch(None)  # type: ignore[arg-type]
        NO_TRACING.inject(headers)
        span.release()
        span.answered(None)  # type: ignore[arg-type]
        app.get(TRACING_KEY)

    for _ in range(args.repeats):
        seconds = timeit.timeit(one_request, number=args.calls)
        print(f"tracing off: {seconds / args.calls * 1e9:.0f} ns per request", flush=True)


if __name__ == "__main__":
    main()
