"""The structured access log: one JSON line per request on the ``gateway.access`` logger.

``access_log_line(entry, settings)`` is called once at the end of each request. The line carries
what an operator needs to follow a request (id, tenant and key id, route, tier, model,
deployment, cache result, status, timings, tokens, cost) and never a key: ``AccessEntry`` has no
field that could hold one. The prompt is added only with ``[observability] access_log_prompts =
true``, cut to ``MAX_PROMPT_CHARS`` and with anything key-shaped redacted.

The record's message is the JSON itself, so a handler with the format ``%(message)s`` writes
clean JSON lines; ``configure_access_log`` installs one (for ``gateway serve``). Serialising
with orjson costs about a microsecond; when the logger is off for INFO nothing is built. When
that handler is the logger's only one, the line goes straight to its buffered stream: a
``LogRecord`` (clock, thread and process lookups) per request would cost more than the line.
Callers check ``access_log_enabled`` before building an entry they would throw away.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

import orjson
from aiohttp import web

from gateway.core.lifecycle import stop_task
from gateway.core.observability_settings import ObservabilitySettings
from gateway.core.redact import redact

ACCESS_LOGGER = "gateway.access"
MAX_PROMPT_CHARS = 2000
FLUSH_INTERVAL_S = 0.5

log = logging.getLogger(ACCESS_LOGGER)


@dataclass(slots=True)
class AccessEntry:
    """One finished request, as the access log shows it (times in milliseconds, cost in USD).

    Not frozen, though nothing changes an entry once made: made per request, a frozen dataclass
    would set each field through ``object.__setattr__`` (about 2 us for these 22).
    """

    ts: float
    request_id: str
    method: str
    path: str
    status: int
    latency_ms: float
    tenant: str | None = None
    key_id: str | None = None
    route: str | None = None
    tier: str | None = None
    model: str | None = None
    deployment: str | None = None
    cache: str | None = None
    stream: bool = False
    attempts: int = 0
    escalations: int = 0
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    error: str | None = None
    """The error code sent to the client (``rate_limit_exceeded``...), never its free text."""
    api: str | None = "chat"
    """The API the client spoke: ``chat``, ``messages``, ``responses`` or ``embeddings``;
    None for a refusal on any other path."""


def access_log_enabled(settings: ObservabilitySettings) -> bool:
    """Whether lines are written at all: callers can skip building an ``AccessEntry``."""
    return settings.access_log and log.isEnabledFor(logging.INFO)


def access_log_line(
    entry: AccessEntry, settings: ObservabilitySettings, prompt: str | None = None
) -> None:
    """Write ``entry`` as one JSON line, with the prompt only where the configuration asks."""
    if not access_log_enabled(settings):
        return
    line = orjson.dumps(entry)
    if prompt is not None and settings.access_log_prompts:
        shown = orjson.dumps(redact(prompt[:MAX_PROMPT_CHARS]))
        line = line[:-1] + b',"prompt":' + shown + b"}"
    handlers = log.handlers
    if len(handlers) == 1 and type(handlers[0]) is BufferedStreamHandler and not log.propagate:
        handlers[0].stream.write(line.decode() + "\n")  # its format is the bare message
        return
    log.info("%s", line.decode())


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that leaves flushing to ``access_log_flusher``: one write call per
    line, not a write and a flush (a system call) per request."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


def flush_access_log() -> None:
    for handler in log.handlers:
        handler.flush()


async def access_log_flusher(app: web.Application) -> AsyncIterator[None]:
    """Flush the access log every ``FLUSH_INTERVAL_S`` and once more on shutdown."""

    async def run() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)  # a period, not a wait for an event
            flush_access_log()

    task = asyncio.create_task(run(), name="access-log-flush")
    yield
    await stop_task(task)
    flush_access_log()


def _buffered_stdout() -> TextIO:
    """Our own buffered writer on stdout's descriptor: with PYTHONUNBUFFERED (common in
    containers) ``sys.stdout`` would make every access line a system call."""
    try:
        return open(sys.stdout.fileno(), "w", buffering=1 << 16, closefd=False)
    except (AttributeError, OSError, ValueError):  # no real descriptor (embedded, redirected)
        return sys.stdout


def configure_access_log(stream: TextIO | None = None) -> logging.Handler:
    """Send access lines, message only, to ``stream`` (stdout) and not to the root logger."""
    handler = BufferedStreamHandler(stream or _buffered_stdout())
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
