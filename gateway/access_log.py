"""The structured access log: one JSON line per request on the ``gateway.access`` logger.

``access_log_line(entry, settings)`` is called once at the end of each request. The line carries
what an operator needs to follow a request (id, tenant and key id, route, tier, model,
deployment, cache result, status, timings, tokens, cost) and never a key: ``AccessEntry`` has no
field that could hold one. The prompt is added only with ``[observability] access_log_prompts =
true``, cut to ``MAX_PROMPT_CHARS`` and with anything key-shaped redacted.

The record's message is the JSON itself, so a handler with the format ``%(message)s`` writes
clean JSON lines; ``configure_access_log`` installs one (for ``gateway serve``). Serialising
with orjson costs about a microsecond; when the logger is off for INFO nothing is built.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TextIO

import orjson

from gateway.observability_settings import ObservabilitySettings
from gateway.tenants.redact import redact

ACCESS_LOGGER = "gateway.access"
MAX_PROMPT_CHARS = 2000

log = logging.getLogger(ACCESS_LOGGER)


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One finished request, as the access log shows it (times in milliseconds, cost in USD)."""

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


def access_log_line(
    entry: AccessEntry, settings: ObservabilitySettings, prompt: str | None = None
) -> None:
    """Write ``entry`` as one JSON line, with the prompt only where the configuration asks."""
    if not settings.access_log or not log.isEnabledFor(logging.INFO):
        return
    line = orjson.dumps(entry)
    if prompt is not None and settings.access_log_prompts:
        shown = orjson.dumps(redact(prompt[:MAX_PROMPT_CHARS]))
        line = line[:-1] + b',"prompt":' + shown + b"}"
    log.info("%s", line.decode())


def configure_access_log(stream: TextIO | None = None) -> logging.Handler:
    """Send access lines, message only, to ``stream`` (stdout) and not to the root logger."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
