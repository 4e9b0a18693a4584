"""Run one embedding worker: ``python -m embedder_worker --socket PATH --model DIR [--threads N]
[--lanes N]``.

Loads the model and runs a warm-up inference, then listens on ``--socket`` (the socket file appears
only once it accepts connections) and prints one line ``READY <socket> pid=<pid>`` on stdout.
SIGTERM or SIGINT drains in-flight requests and exits 0. With ``--exit-on-stdin-eof`` (the
supervisor passes it) the worker also drains and exits when its stdin closes, i.e. when the process
that started it is gone. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from embedder_worker.allocator import limit_arenas, release_free_memory
from embedder_worker.model import POOLINGS, OnnxEmbedder
from embedder_worker.model_files import missing_model
from embedder_worker.server import DEFAULT_INLINE_MAX_TOKENS, WorkerServer
from embedder_worker.settings import DEFAULT_LANES, DEFAULT_THREADS

logger = logging.getLogger(__name__)

READY_PREFIX = "READY"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m embedder_worker", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket path to listen on")
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument(
        "--threads",
        type=_positive,
        default=DEFAULT_THREADS,
        help="onnxruntime intra-op threads of the one session (one inference)",
    )
    parser.add_argument(
        "--lanes",
        type=_positive,
        default=DEFAULT_LANES,
        help="inferences that may run at once on that session (batches side by side)",
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument(
        "--inline-max-tokens",
        type=int,
        default=DEFAULT_INLINE_MAX_TOKENS,
        help="a lone text up to this many tokens runs on the event loop thread, without the hop "
        "to the inference thread and back; 0: every batch runs in the inference thread",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop (auto: when installed, as the gateway does) or asyncio's own",
    )
    parser.add_argument("--pooling", choices=POOLINGS, default=None)
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--query-prefix", default=None)
    parser.add_argument("--quantize", action="store_true", help="serve model.int8.onnx")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--drain-timeout-s", type=float, default=30.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin reaches end of file (the parent closed its end or died)."""

    def on_readable() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_readable)


async def serve(model: OnnxEmbedder, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.exit_on_stdin_eof:
        _watch_stdin(loop, stop)
    server = WorkerServer(
        model, args.socket, args.max_batch, args.max_wait_ms, args.inline_max_tokens, args.lanes
    )
    await server.start()
    print(f"{READY_PREFIX} {args.socket} pid={os.getpid()}", flush=True)
    await stop.wait()
    logger.info("stopping: draining in-flight requests")
    await server.drain(args.drain_timeout_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    limit_arenas()
    # A missing or unreadable model is one line and exit status 2, not a traceback: the
    # supervisor restarts a worker that exits, and would print it again at every restart.
    if (problem := missing_model(args.model)) is not None:
        logger.error("%s", problem)
        return 2
    try:
        model = OnnxEmbedder(
            args.model,
            threads=args.threads,
            max_length=args.max_length,
            pooling=args.pooling,
            normalize=args.normalize,
            query_prefix=args.query_prefix,
            quantize=args.quantize,
        )
    except Exception as exc:  # onnxruntime's and the tokenizer's errors have no common base
        logger.error("cannot load the model in %s: %s", args.model, exc)
        return 2
    model.warm_up()
    release_free_memory()  # what loading and the first inferences freed
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        return runner.run(serve(model, args))


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for or, with ``auto``, installed; else asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
