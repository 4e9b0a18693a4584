"""The seam through which tracing watches upstream attempts, and the no-op used when it is off.

``Failover`` asks its ``AttemptTracer`` for one ``AttemptSpan`` per attempt at a deployment and
tells it how the attempt ended; ``Upstream`` lets the tracer add its headers (W3C
``traceparent``) to every provider call. The OpenTelemetry implementation lives in
``gateway.observability.otel``, above this layer; with tracing off every call lands on
``NO_TRACING``, whose methods do nothing and allocate nothing. Imports only ``core``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Protocol

from gateway.core.answer import Completion, Deployment, Json
from gateway.core.chat import ChatRequest


class AttemptSpan(Protocol):
    """One attempt at one deployment, current (for header injection) until ``release``."""

    def watch(self, chunks: AsyncGenerator[Json, None]) -> AsyncGenerator[Json, None]:
        """The stream, observed: the span ends when it ends, fails or is closed."""
        ...

    def answered(self, completion: Completion) -> None:
        """A whole answer arrived: its model, finish reasons and usage; the span ends."""
        ...

    def failed(self, error: BaseException) -> None:
        """The attempt failed (an ``UpstreamFailure``, or anything else); the span ends."""
        ...

    def release(self) -> None:
        """Stop being the current span (a stream's span stays open until the stream ends)."""
        ...


class AttemptTracer(Protocol):
    def attempt(self, request: ChatRequest, deployment: Deployment) -> AttemptSpan:
        """Start the attempt's span and make it current."""
        ...

    def inject(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """``headers`` plus the current span's trace context (the same mapping when off)."""
        ...


class _NoSpan:
    __slots__ = ()

    def watch(self, chunks: AsyncGenerator[Json, None]) -> AsyncGenerator[Json, None]:
        return chunks

    def answered(self, completion: Completion) -> None:
        return None

    def failed(self, error: BaseException) -> None:
        return None

    def release(self) -> None:
        return None


_NO_SPAN = _NoSpan()


class _NoTracing:
    __slots__ = ()

    def attempt(self, request: ChatRequest, deployment: Deployment) -> AttemptSpan:
        return _NO_SPAN

    def inject(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        return headers


NO_TRACING: AttemptTracer = _NoTracing()
