"""Tracing's face to the app: the key, the middleware, the cleanup context, the attributes.

Off unless ``[observability.tracing]`` names an endpoint. When it is off ``setup_tracing`` adds
nothing: no middleware, no context, and OpenTelemetry is never imported, so the request path
pays nothing. When it is on, ``tracing_context`` imports ``gateway.observability.otel`` (the
OpenTelemetry SDK and its OTLP/HTTP exporters), hands the tracer to ``Upstream`` and
``Failover`` (a span per upstream attempt, ``traceparent`` sent upstream), and the middleware
opens a span per API request, continuing the client's ``traceparent``. The request's outcome
reaches its span through ``request_done`` (called by the accounting stage). Touches the app's
upstream objects and, through the exporter, only the configured collector.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from aiohttp import web

from gateway.core.observability_settings import OBSERVABILITY_KEY, ObservabilitySettings
from gateway.observability.genai import Attributes, AttributeValue
from gateway.upstream.appkeys import FAILOVER, UPSTREAM
from gateway.upstream.attempt_trace import NO_TRACING, AttemptTracer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}


class Tracing(AttemptTracer, Protocol):
    """What the app holds under ``TRACING_KEY`` (``gateway.observability.otel.OtelTracing``)."""

    async def traced(self, request: web.Request, handler: Handler,
                     attributes: Attributes) -> web.StreamResponse:
        """Run ``handler`` inside the request's span (a child of the client's traceparent)."""
        ...

    def request_done(self, attributes: Attributes, failed: bool) -> None:
        """Add the request's outcome to the current request span."""
        ...

    async def flush(self) -> None:
        """Export every finished span and the metrics now (off the event loop)."""
        ...

    async def close(self) -> None:
        """Flush, then stop the exporters."""
        ...


TRACING_KEY = web.AppKey("tracing", Tracing)


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span for each API request; other paths (dashboard, metrics, probes) are not traced."""
    tracing = request.app.get(TRACING_KEY)
    if tracing is None or not request.path.startswith("/v1/"):
        return await handler(request)
    attributes: dict[str, AttributeValue] = {"http.request.method": request.method,
                                             "url.path": request.path}
    if (operation := _OPERATIONS.get(request.path)) is not None:
        attributes["gen_ai.operation.name"] = operation
    return await tracing.traced(request, handler, attributes)


async def tracing_context(app: web.Application) -> AsyncIterator[None]:
    """The tracer and meter with their exporters, for as long as the app runs."""
    settings = app[OBSERVABILITY_KEY].tracing
    assert settings is not None, "tracing_context is added only when tracing is configured"
    try:  # imported here so that a gateway without tracing never loads OpenTelemetry
        from gateway.observability.otel import OtelTracing
    except ImportError as exc:
        raise RuntimeError(
            f"[observability.tracing] needs OpenTelemetry ({exc.name} is missing): "
            "pip install 'llm-gateway[tracing]'") from exc

    tracing = OtelTracing(settings)
    app[TRACING_KEY] = tracing
    app[UPSTREAM].tracer = app[FAILOVER].tracer = tracing
    try:
        yield
    finally:
        app[UPSTREAM].tracer = app[FAILOVER].tracer = NO_TRACING
        await tracing.close()


def setup_tracing(app: web.Application, settings: ObservabilitySettings) -> None:
    """Add the middleware (outermost, so it sees every answer) and the context, when on."""
    if settings.tracing is None:
        return
    app.middlewares.insert(0, tracing_middleware)
    app.cleanup_ctx.append(tracing_context)

