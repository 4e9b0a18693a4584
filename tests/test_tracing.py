"""OpenTelemetry traces and GenAI metrics (gateway/observability/tracing.py and otel.py),
exported over OTLP/HTTP to an in-process receiver that decodes them with opentelemetry-proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.__main__ import _secrets
from gateway.cache.context import CACHE
from gateway.core.config import ConfigError
from gateway.observability.tracing import TRACING_KEY
from gateway.routing.context import ROUTER
from tests.conftest import ROOT, GatewayFactory, model, openai_provider, settings_from
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app
from tests.fake_otlp import OtlpReceiver, otlp_app

MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
USER = [{"role": "user", "content": "Say hello"}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CHAT_SPAN = "POST /v1/chat/completions"
Traced = tuple[TestClient, FakeOpenAI, FakeOpenAI, OtlpReceiver]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[OtlpReceiver, str]:
    """The collector; asked for before the gateway, so it outlives the gateway's last export."""
    received = OtlpReceiver()
    server: TestServer = await aiohttp_server(otlp_app(received))
    return received, str(server.make_url("")).rstrip("/")


async def _gateway(make_gateway: GatewayFactory, aiohttp_server: Any, endpoint: str,
                   **tracing: Any) -> tuple[TestClient, FakeOpenAI, FakeOpenAI]:
    """Deployments ``a`` (cheaper, tried first) and ``b`` of model ``m``, traced."""
    first, second = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(first))
    s2: TestServer = await aiohttp_server(fake_openai_app(second))
    env = tracing.pop("env", {})
    client = await make_gateway({
        "providers": [openai_provider("a", str(s1.make_url("/v1"))),
                      openai_provider("groq", str(s2.make_url("/v1")))],
        "models": [model("m", "a", upstream_model="up-a", input_price_per_mtok=1.0),
                   model("m", "groq", upstream_model="up-b", input_price_per_mtok=2.0)],
        "observability": {"tracing": {"endpoint": endpoint, "export_interval_ms": 60_000,
                                      **tracing}},
    }, env)
    return client, first, second


@pytest.fixture
async def traced(receiver: tuple[OtlpReceiver, str], make_gateway: GatewayFactory,
                 aiohttp_server: Any) -> Traced:
    received, endpoint = receiver
    client, first, second = await _gateway(make_gateway, aiohttp_server, endpoint)
    yield client, first, second, received
    first.release.set()
    second.release.set()


async def _ask(client: TestClient, stream: bool = False, **headers: str) -> Any:
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "m", "messages": USER, "stream": stream, "max_tokens": 50,
        "stream_options": {"include_usage": True} if stream else None})
    await resp.read()
    return resp


async def _flush(client: TestClient) -> None:
    await client.app[TRACING_KEY].flush()


async def test_a_request_exports_a_server_span_and_a_genai_client_span_per_attempt(
        traced: Traced) -> None:
    client, first, _, received = traced
    assert (await _ask(client)).status == 200
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named(CHAT_SPAN)) and bool(r.named("chat up-a")))
    server, = received.named(CHAT_SPAN)
    attempt, = received.named("chat up-a")
    assert (server.kind, attempt.kind) == ("SPAN_KIND_SERVER", "SPAN_KIND_CLIENT")
    assert attempt.trace_id == server.trace_id and attempt.parent_span_id == server.span_id
    assert server.service == "llm-gateway"
    s = server.attributes
    assert (s["gen_ai.operation.name"], s["gen_ai.request.model"]) == ("chat", "m")
    assert (s["gen_ai.provider.name"], s["gen_ai.response.model"]) == ("openai", "up-a")
    assert s["http.response.status_code"] == 200 and s["gateway.tenant"] == "anonymous"
    assert s["gateway.deployment"] == "a/up-a" and s["gateway.attempts"] == 1
    assert s["gen_ai.usage.input_tokens"] > 0 and s["gen_ai.usage.output_tokens"] > 0
    a = attempt.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"]) == ("chat", "openai")
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("up-a", "up-a")
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == s["gen_ai.usage.input_tokens"]
    assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int)
    assert first.requests, "the request really went upstream"


async def test_the_clients_traceparent_is_continued_and_passed_upstream(traced: Traced) -> None:
    client, first, _, received = traced
    await _ask(client, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named("chat up-a")))
    server, = received.named(CHAT_SPAN)
    attempt, = received.named("chat up-a")
    assert (server.trace_id, server.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    sent = first.headers[-1]["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{attempt.span_id}-01", "upstream sees the attempt span"


async def test_a_failed_attempt_has_its_own_span_with_the_error(traced: Traced) -> None:
    client, first, second, received = traced
    first.script.append(Reply(kind="status", status=503))
    assert (await _ask(client)).status == 200
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named("chat up-b")))
    failed, = received.named("chat up-a")
    answered, = received.named("chat up-b")
    assert failed.status == "STATUS_CODE_ERROR" and "503" in failed.status_message
    assert failed.attributes["error.type"] == "server_error"
    assert failed.attributes["http.response.status_code"] == 503
    assert answered.status != "STATUS_CODE_ERROR"
    assert answered.attributes["gen_ai.provider.name"] == "groq"
    assert failed.parent_span_id == answered.parent_span_id
    assert received.named(CHAT_SPAN)[0].attributes["gateway.attempts"] == 2
    assert first.headers[-1]["traceparent"].split("-")[2] == failed.span_id
    assert second.headers[-1]["traceparent"].split("-")[2] == answered.span_id


async def test_a_streamed_answer_ends_its_span_with_the_stream_and_exports_genai_metrics(
        traced: Traced) -> None:
    client, _, _, received = traced
    resp = await _ask(client, stream=True)
    assert resp.status == 200
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named("chat up-a"))
                            and bool(r.metric("gen_ai.client.operation.time_to_first_chunk")))
    attempt, = received.named("chat up-a")
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    first_chunk, = received.metric("gen_ai.client.operation.time_to_first_chunk")
    assert first_chunk.count == 1 and first_chunk.unit == "s"
    assert first_chunk.attributes["gen_ai.request.model"] == "up-a"
    duration, = received.metric("gen_ai.client.operation.duration")
    assert duration.count == 1 and duration.attributes["gen_ai.response.model"] == "up-a"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in
              received.metric("gen_ai.client.token.usage")}
    assert set(tokens) == {"input", "output"} and tokens["output"].unit == "{token}"
    assert tokens["output"].sum == attempt.attributes["gen_ai.usage.output_tokens"]


async def test_a_failed_attempt_counts_in_the_duration_metric_with_its_error_type(
        traced: Traced) -> None:
    client, first, _, received = traced
    first.script.append(Reply(kind="status", status=500))
    await _ask(client)
    await _flush(client)
    await received.wait_for(lambda r: len(r.metric("gen_ai.client.operation.duration")) == 2)
    errors = {p.attributes.get("error.type") for p in
              received.metric("gen_ai.client.operation.duration")}
    assert errors == {"server_error", None}


async def test_headers_come_from_the_environment_and_reach_the_collector(
        receiver: tuple[OtlpReceiver, str], make_gateway: GatewayFactory,
        aiohttp_server: Any) -> None:
    received, endpoint = receiver
    client, _, _ = await _gateway(
        make_gateway, aiohttp_server, endpoint, headers_env={"x-collector-key": "OTLP_KEY"},
        service_name="edge-gw", env={"OTLP_KEY": "collector-secret-42"})
    await _ask(client)
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named(CHAT_SPAN)))
    assert received.named(CHAT_SPAN)[0].service == "edge-gw"
    assert all(h.get("x-collector-key") == "collector-secret-42" for h in received.headers)
    assert "collector-secret-42" not in repr(client.app[TRACING_KEY])


async def test_sampling_drops_new_traces_but_keeps_a_sampled_parent(
        receiver: tuple[OtlpReceiver, str], make_gateway: GatewayFactory,
        aiohttp_server: Any) -> None:
    received, endpoint = receiver
    client, first, _ = await _gateway(make_gateway, aiohttp_server, endpoint, sampling_ratio=0.0)
    await _ask(client)
    assert "traceparent" in first.headers[-1], "an unsampled trace is still passed on"
    assert int(first.headers[-1]["traceparent"][-2:], 16) & 1 == 0, "marked as not sampled"
    await _ask(client, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    await _flush(client)
    await received.wait_for(lambda r: bool(r.named("chat up-a")))
    assert {s.trace_id for s in received.spans} == {CLIENT_TRACE}


async def test_other_paths_and_refusals_are_traced_only_under_v1(traced: Traced) -> None:
    client, _, _, received = traced
    assert (await client.get("/healthz")).status == 200
    bad = await client.post("/v1/chat/completions", json={"model": "m", "messages": "nope"})
    assert bad.status == 400
    assert (await client.get("/v1/models/m")).status == 200
    await _flush(client)
    await received.wait_for(lambda r: len(r.spans) == 2)
    refused, listed = received.spans
    assert (refused.name, listed.name) == (CHAT_SPAN, "GET /v1/models/{model}")
    assert listed.attributes["url.path"] == "/v1/models/m"
    assert refused.attributes["http.response.status_code"] == 400
    assert refused.status != "STATUS_CODE_ERROR", "a 4xx is the client's error"


def _observability(tmp_path: Path, tracing: dict[str, Any], env: dict[str, str]) -> Any:
    return settings_from({"providers": [openai_provider("p", "http://127.0.0.1:9/v1")],
                          "models": [model("m", "p")],
                          "observability": {"tracing": tracing}}, tmp_path, env).observability


def test_tracing_is_off_unless_an_endpoint_is_configured(tmp_path: Path) -> None:
    assert _observability(tmp_path, {}, {}).tracing is None
    assert _observability(tmp_path, {"sampling_ratio": 0.5}, {}).tracing is None
    on = _observability(tmp_path, {"endpoint": "http://otel:4318/"}, {}).tracing
    assert on is not None and on.endpoint == "http://otel:4318" and on.sampling_ratio == 1.0


@pytest.mark.parametrize(("tracing", "message"), [
    ({"endpoint": "otel:4318"}, "observability.tracing.endpoint: expected an http"),
    ({"endpoint": "http://o", "sampling_ratio": 1.5}, "observability.tracing.sampling_ratio"),
    ({"endpoint": "http://o", "headers_env": {"authorization": "MISSING"}},
     "observability.tracing.headers_env.authorization: environment variable MISSING is not set"),
    ({"endpoint": "http://o", "colour": 1}, "observability.tracing.colour: unknown key"),
])
def test_bad_tracing_settings_fail_naming_the_key(
        tmp_path: Path, tracing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _observability(tmp_path, tracing, {})


def test_collector_header_values_are_secrets_kept_out_of_reprs_and_logs(tmp_path: Path) -> None:
    settings = settings_from(
        {"providers": [openai_provider("p", "http://127.0.0.1:9/v1")], "models": [model("m", "p")],
         "observability": {"tracing": {"endpoint": "http://o",
                                       "headers_env": {"authorization": "OTLP_AUTH"}}}},
        tmp_path, {"OTLP_AUTH": "Bearer otlp-secret-value"})
    assert "otlp-secret" not in repr(settings)
    assert "Bearer otlp-secret-value" in _secrets(settings), "the log redaction knows it"


def test_with_tracing_off_the_tracing_code_and_the_sdk_trace_pipeline_are_never_imported(
    tmp_path: Path,
) -> None:
    script = (
        "import sys, asyncio\n"
        "from tests.conftest import settings_from, openai_provider, model\n"
        "from gateway.app import create_app\n"
        "from pathlib import Path\n"
        "settings = settings_from({'providers': [openai_provider('p', 'http://127.0.0.1:9/v1')],"
        " 'models': [model('m', 'p')]}, Path(sys.argv[1]))\n"
        "app = create_app(settings)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace',"
        " 'opentelemetry.exporter', 'gateway.observability.otel')))\n"
        "print(len(app.middlewares), loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=True, env=os.environ.copy())
    # The redis client imports OpenTelemetry's API for metrics of its own when it is installed;
    # the gateway's tracing code, the SDK's trace pipeline and the exporter stay out.
    assert done.stdout.split() == ["1", "[]"], done.stdout


async def test_a_routed_request_span_says_route_tier_escalation_and_cache(
        receiver: tuple[OtlpReceiver, str], make_gateway: GatewayFactory,
        aiohttp_server: Any) -> None:
    received, endpoint = receiver
    cheap, strong = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(cheap))
    s2: TestServer = await aiohttp_server(fake_openai_app(strong))
    client = await make_gateway({
        "providers": [openai_provider("cheap-p", str(s1.make_url("/v1"))),
                      openai_provider("strong-p", str(s2.make_url("/v1")))],
        "models": [model("small", "cheap-p", "cheap"), model("large", "strong-p", "reasoning")],
        "embedder": {"model_dir": str(MODEL_DIR)},
        "cache": {"enabled": True},
        "observability": {"tracing": {"endpoint": endpoint, "export_interval_ms": 60_000}},
    })
    await client.app[EMBEDDER_POOL].wait_live(1)
    await client.app[ROUTER].loaded.wait()
    cheap.script.append(Reply(finish_reason="length"))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi! How are you doing?"}]}
    for _ in range(2):  # the second is answered from the cache
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status == 200
        await resp.read()
        await client.app[CACHE].flush()  # the cache writes in batches; make this one visible
    await _flush(client)
    await received.wait_for(lambda r: len(r.named(CHAT_SPAN)) == 2)
    escalated, cached = (s.attributes for s in received.named(CHAT_SPAN))
    assert escalated["gateway.route"] == cached["gateway.route"] == "chit_chat"
    assert escalated["gateway.escalation"] == "cheap->reasoning: truncated"
    assert (escalated["gateway.tier"], escalated["gateway.escalations"]) == ("reasoning", 1)
    assert (escalated["gateway.cache"], cached["gateway.cache"]) == ("miss", "hit")
    assert escalated["gen_ai.request.model"] == "auto"
    assert escalated["gen_ai.response.model"] == "large"
    truncated, = received.named("chat small")
    assert truncated.attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert len(received.named("chat large")) == 1, "the cache hit called no one"
    cheap.release.set()
    strong.release.set()
