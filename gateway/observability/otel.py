"""OpenTelemetry behind ``Tracing``: spans and GenAI metrics exported over OTLP/HTTP.

Imported only by ``tracing_context``, when ``[observability.tracing]`` names an endpoint. One
``TracerProvider`` (parent-based sampling at the configured ratio, a batch processor) and, when
metrics are on, one ``MeterProvider`` (a periodic reader), both with OTLP/HTTP exporters to the
configured endpoint (``/v1/traces``, ``/v1/metrics``) and its headers; no global provider is set
and nothing here reads the environment. Spans follow the GenAI semantic conventions: a SERVER
span per API request, a CLIENT span ``chat {model}`` per upstream attempt, and the metrics
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.time_to_first_chunk``. Exports and flushes run off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextvars import Token
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.core.answer import Completion, Deployment, Json, Usage, as_str, usage_from_openai
from gateway.core.chat import ChatRequest
from gateway.core.errors import UpstreamFailure
from gateway.core.observability_settings import TracingSettings
from gateway.observability.genai import Attributes, AttributeValue, genai_provider_name
from gateway.upstream.attempt_trace import AttemptSpan

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_EXPORT_TIMEOUT_S = 10.0
# The bucket boundaries the GenAI conventions recommend for each histogram.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)
_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)


class _Instruments:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("gateway")
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to receive the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)


class OtelTracing:
    """The ``Tracing`` the app holds when tracing is configured."""

    def __init__(self, settings: TracingSettings) -> None:
        resource = Resource({"service.name": settings.service_name})
        headers = dict(settings.headers)
        self.tracer_provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)))
        self.tracer_provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=headers,
                             timeout=_EXPORT_TIMEOUT_S, compression=Compression.NoCompression),
            schedule_delay_millis=settings.export_interval_ms))
        self.tracer = self.tracer_provider.get_tracer("gateway")
        self.meter_provider: MeterProvider | None = None
        self.instruments: _Instruments | None = None
        if settings.metrics:
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{settings.endpoint}/v1/metrics", headers=headers,
                                   timeout=_EXPORT_TIMEOUT_S,
                                   compression=Compression.NoCompression),
                export_interval_millis=settings.export_interval_ms)
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            self.instruments = _Instruments(self.meter_provider)
        self.propagator = TraceContextTextMapPropagator()
        self._static: dict[str, dict[str, AttributeValue]] = {}

    # The request span.

    async def traced(self, request: web.Request, handler: Handler,
                     attributes: Attributes) -> web.StreamResponse:
        parent = self.propagator.extract(request.headers)
        # The route's template, not the path: /v1/models/{model} is one span name, not many.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        name = f"{request.method} {route}"
        attributes = {**attributes, "http.route": route}
        with self.tracer.start_as_current_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                record_exception=False, set_status_on_exception=False) as span:
            try:
                response = await handler(request)
            except BaseException as error:
                span.set_attribute("error.type", type(error).__qualname__)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    def request_done(self, attributes: Attributes, failed: bool) -> None:
        span = trace.get_current_span()
        span.set_attributes(attributes)
        if failed:
            span.set_status(Status(StatusCode.ERROR))

    # Upstream attempts.

    def attempt(self, request: ChatRequest, deployment: Deployment) -> AttemptSpan:
        static = self._deployment_attributes(deployment)
        attributes = {**static, **_request_attributes(request)}
        span = self.tracer.start_span(f"chat {deployment.model.upstream_model}",
                                      kind=SpanKind.CLIENT, attributes=attributes)
        return _Attempt(self, span, static)

    def inject(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        carrier = dict(headers)
        self.propagator.inject(carrier)
        return carrier

    def _deployment_attributes(self, deployment: Deployment) -> dict[str, AttributeValue]:
        """The attributes every span and metric of a deployment shares (computed once)."""
        cached = self._static.get(deployment.id)
        if cached is None:
            cached = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": genai_provider_name(deployment.provider),
                "gen_ai.request.model": deployment.model.upstream_model,
            }
            url = urlsplit(deployment.provider.base_url)
            if url.hostname:
                cached["server.address"] = url.hostname
                cached["server.port"] = url.port or (443 if url.scheme == "https" else 80)
            self._static[deployment.id] = cached
        return cached

    # Lifecycle.

    async def flush(self) -> None:
        await asyncio.to_thread(self._flush)

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)

    def _flush(self) -> None:
        self.tracer_provider.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def _shutdown(self) -> None:
        self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _request_attributes(request: ChatRequest) -> dict[str, AttributeValue]:
    values: dict[str, Any] = {
        "gen_ai.request.max_tokens": request.max_tokens,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.request.top_p": request.top_p,
        "gen_ai.request.seed": request.seed,
        "gen_ai.request.choice.count": request.n if request.n != 1 else None,
        "gen_ai.request.stop_sequences": list(request.stop) or None,
    }
    return {k: v for k, v in values.items() if v is not None}


class _Attempt:
    """One upstream attempt's span: current until ``release``, ended once."""

    __slots__ = ("_ended", "_metrics", "_owner", "_pending", "_span", "_started", "_token")

    def __init__(self, owner: OtelTracing, span: Span,
                 metrics: dict[str, AttributeValue]) -> None:
        self._owner, self._span, self._metrics = owner, span, metrics
        self._started = time.perf_counter()
        self._token: Token[Context] | None = otel_context.attach(trace.set_span_in_context(span))
        self._ended = False
        self._pending: tuple[Json, Usage | None] | None = None

    def release(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        if self._pending is not None:
            self._end(*self._pending)

    def answered(self, completion: Completion) -> None:
        self._end(completion.body, completion.usage)

    def failed(self, error: BaseException) -> None:
        if self._ended:
            return
        if isinstance(error, UpstreamFailure):
            kind, message = error.kind.value, error.message
            if error.status is not None:
                self._span.set_attribute("http.response.status_code", error.status)
        else:
            kind, message = type(error).__qualname__, ""
        self._span.set_status(Status(StatusCode.ERROR, message[:200] or None))
        self._end({}, None, error_type=kind)

    def watch(self, chunks: AsyncGenerator[Json, None]) -> AsyncGenerator[Json, None]:
        return self._watched(chunks)

    async def _watched(self, chunks: AsyncGenerator[Json, None]) -> AsyncGenerator[Json, None]:
        seen: dict[str, Any] = {"choices": []}
        usage: Usage | None = None
        first = True
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    self._first_chunk()
                usage = usage_from_openai(chunk.get("usage")) or usage
                _merge_chunk(seen, chunk)
                yield chunk
        except UpstreamFailure as failure:
            self.failed(failure)
            raise
        finally:
            await chunks.aclose()
            # Ended by the stream itself (whole, or closed early by the client or failover).
            self._finish(seen, usage)

    def _first_chunk(self) -> None:
        instruments = self._owner.instruments
        if instruments is not None:
            instruments.first_chunk.record(time.perf_counter() - self._started, self._metrics)

    def _finish(self, body: Json, usage: Usage | None) -> None:
        # While the attempt is still current, failover may yet judge it (an empty stream):
        # the verdict waits for ``release``.
        if self._token is not None:
            self._pending = (body, usage)
        else:
            self._end(body, usage)

    def _end(self, body: Json, usage: Usage | None, error_type: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        span, attributes = self._span, dict(self._metrics)
        if model := as_str(body.get("model")):
            span.set_attribute("gen_ai.response.model", model)
            attributes["gen_ai.response.model"] = model
        if response_id := as_str(body.get("id")):
            span.set_attribute("gen_ai.response.id", response_id)
        reasons = [as_str(c.get("finish_reason")) for c in body.get("choices") or ()
                   if isinstance(c, dict) and c.get("finish_reason")]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            attributes["error.type"] = error_type
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        span.end()
        self._record(attributes, usage)

    def _record(self, attributes: dict[str, AttributeValue], usage: Usage | None) -> None:
        instruments = self._owner.instruments
        if instruments is None:
            return
        instruments.duration.record(time.perf_counter() - self._started, attributes)
        if usage is not None:
            instruments.tokens.record(usage.prompt_tokens,
                                      {**attributes, "gen_ai.token.type": "input"})
            instruments.tokens.record(usage.completion_tokens,
                                      {**attributes, "gen_ai.token.type": "output"})


def _merge_chunk(seen: dict[str, Any], chunk: Json) -> None:
    """Keep from a stream's chunks what a span reports: model, id, finish reasons."""
    for key in ("model", "id"):
        if key not in seen and isinstance(chunk.get(key), str):
            seen[key] = chunk[key]
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            seen["choices"].append({"finish_reason": choice["finish_reason"]})
