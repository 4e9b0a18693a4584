"""An in-process OTLP/HTTP receiver: what an OpenTelemetry collector sees of the gateway.

A small aiohttp app serving ``POST /v1/traces`` and ``POST /v1/metrics`` with protobuf bodies,
decoded with opentelemetry-proto's own message classes (the wire format the SDK's exporter
speaks), and answering with the matching export responses. Tests read the spans and histogram
points it received, and the headers each export carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

RECEIVER = web.AppKey("otlp_receiver", "OtlpReceiver")
WAIT_S = 20.0


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str
    status_message: str
    service: str


@dataclass(frozen=True)
class ReceivedPoint:
    """One histogram data point of one metric."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, ready: Callable[[OtlpReceiver], bool]) -> None:
        """Return once ``ready`` holds for what has arrived (fails after ``WAIT_S``)."""
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(lambda: ready(self))

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def metric(self, name: str) -> list[ReceivedPoint]:
        return [p for p in self.points if p.metric == name]


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def _span(span: trace_pb2.Span, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        kind=trace_pb2.Span.SpanKind.Name(span.kind),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes=_attributes(span.attributes),
        status=trace_pb2.Status.StatusCode.Name(span.status.code),
        status_message=span.status.message,
        service=service,
    )


async def _traces(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    message = trace_service_pb2.ExportTraceServiceRequest()
    message.ParseFromString(await request.read())
    async with receiver.changed:
        receiver.headers.append(dict(request.headers))
        for resource_spans in message.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope in resource_spans.scope_spans:
                receiver.spans.extend(_span(s, service) for s in scope.spans)
        receiver.changed.notify_all()
    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    return web.Response(body=reply, content_type="application/x-protobuf")


async def _metrics(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    message = metrics_service_pb2.ExportMetricsServiceRequest()
    message.ParseFromString(await request.read())
    async with receiver.changed:
        receiver.headers.append(dict(request.headers))
        for resource_metrics in message.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    receiver.points.extend(
                        ReceivedPoint(metric.name, metric.unit, _attributes(p.attributes),
                                      p.count, p.sum)
                        for p in metric.histogram.data_points)
        receiver.changed.notify_all()
    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
    return web.Response(body=reply, content_type="application/x-protobuf")


def otlp_app(receiver: OtlpReceiver) -> web.Application:
    app = web.Application()
    app[RECEIVER] = receiver
    app.router.add_post("/v1/traces", _traces)
    app.router.add_post("/v1/metrics", _metrics)
    return app
