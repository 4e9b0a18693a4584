"""Redaction of API keys and bearer tokens from log lines and error text.

``redact`` rewrites a string; ``RedactingFilter`` applies it to every record (message, arguments
and traceback) passing a handler. Install the filter on handlers, not loggers: a logger's filters
do not see records propagated from its children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[REDACTED]"
_PATTERNS = (
    (re.compile(r"gw-[A-Za-z0-9_-]{8,}"), "gw-" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+"), r"\1\2" + MASK),
    (
        re.compile(r"(?i)\b((?:x-)?api[-_]?key|authorization|key_secret|admin_key)"
                   r"([\"']?\s*[:=]\s*[\"']?)(?!bearer\b|basic\b)[^\s\"',;&]+"),
        r"\1\2" + MASK,
    ),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with anything that looks like a gateway key, a bearer token or a secret masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no key reaches a log line; never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def install_redaction(logger: logging.Logger | None = None, secrets: Iterable[str] = ()) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (the root logger by default)."""
    target = logger if logger is not None else logging.getLogger()
    shared = RedactingFilter(secrets)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(shared)
