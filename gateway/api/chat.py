"""``POST /v1/chat/completions``: the path of one chat request through the gateway.

authenticate → parse → admit → choose candidates → call upstream with failover → answer (JSON
or SSE) with headers that say what happened → account. Each stage lives in its own module; this
one only sequences them and records what happened on the request's ``RequestRecord``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import orjson
from aiohttp import web

from gateway import dispatch
from gateway.accounting import account
from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.appkeys import CATALOG
from gateway.chat import ChatRequest, parse_chat_request
from gateway.dispatch import Target, tiers_after
from gateway.errors import GatewayError, RateLimited, UpstreamFailed, UpstreamFailure
from gateway.failover import Attempt, Stream
from gateway.metrics import METRICS_KEY, refusal_kind
from gateway.observability_settings import OBSERVABILITY_KEY
from gateway.providers.base import Deployment, Json, Usage, usage_from_openai
from gateway.request_record import RequestRecord
from gateway.requestctx import REQUEST_ID
from gateway.routing.context import ROUTER, ROUTING_CONFIG, decide, prompt_vector
from gateway.routing.router import decision_headers
from gateway.sse import DONE, encode_data
from gateway.tenants.context import ADMISSION_KEY
from gateway.tenants.quotas import Reservation, rate_limit_headers

log = logging.getLogger(__name__)


def answer_headers(
    record: RequestRecord, deployment: Deployment, attempts: Sequence[Attempt]
) -> dict[str, str]:
    """What happened, in headers: routing first, then who answered and how."""
    headers = {
        **record.decision_headers,
        "x-request-id": record.request_id,
        "x-gateway-provider": deployment.provider.name,
        "x-gateway-deployment": deployment.id,
        "x-gateway-model": deployment.model.name,
        "x-gateway-tier": deployment.tier,
        "x-gateway-attempts": str(len(attempts)),
        "Server-Timing": record.timing.header(),
    }
    if record.escalation:
        headers["x-gateway-escalated"] = record.escalation
    if record.budget_downgraded:
        headers["x-gateway-budget"] = "downgraded"
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    record = RequestRecord(request[REQUEST_ID])
    principal = caller(request)
    chat = parse_chat_request(await read_body(request))
    record.principal, record.model, record.stream = principal, chat.model, chat.stream
    if app[OBSERVABILITY_KEY].access_log_prompts:
        record.prompt = next((m.text for m in reversed(chat.messages) if m.role == "user"), None)
    try:
        reservation = await app[ADMISSION_KEY].admit(principal, chat)
    except RateLimited as refusal:
        app[METRICS_KEY].refused(refusal_kind(refusal) or "rate_limit", principal.tenant)
        raise
    record.timing.mark("admit")
    try:
        response = await _answer(request, chat, record, reservation)
        response.headers.update(rate_limit_headers(reservation))
        return response
    except GatewayError as error:
        record.status, record.error = error.status, error.code
        if isinstance(error, UpstreamFailed):
            record.attempts = error.attempts
        error.headers.update(rate_limit_headers(reservation))
        raise
    except BaseException:
        record.status = 499  # the client went away (nginx's code for it)
        raise
    finally:
        await account(app, record, reservation)


async def target_for(
    app: web.Application, chat: ChatRequest, record: RequestRecord, reservation: Reservation
) -> Target:
    """An explicit model's failover group, or the routed tiers of ``auto`` (and aliases)."""
    routing = app[ROUTING_CONFIG].settings
    if not routing.is_alias(chat.model):
        return Target(group=tuple(app[CATALOG].named(chat.model)))
    text, vector = await prompt_vector(app, chat)
    record.timing.mark("embed")
    decision = decide(app, record.request_id, text, vector)
    order = app[ROUTER].plan.order
    if reservation.downgrade and order and decision.tier != order[0]:
        decision = replace(decision, tier=order[0], escalate=False)
        record.budget_downgraded = True
    record.route, record.decision_headers = decision.route, decision_headers(decision)
    return Target(tiers=tiers_after(decision, order, routing.escalation), decision=decision)


async def _answer(
    request: web.Request, chat: ChatRequest, record: RequestRecord, reservation: Reservation
) -> web.StreamResponse:
    target = await target_for(request.app, chat, record, reservation)
    record.timing.mark("route")
    if chat.stream:
        return await _stream(request, chat, target, record)
    answer = await dispatch.complete(request.app, chat, target, record)
    record.timing.add("upstream", answer.upstream_ms)
    record.deployment, record.attempts = answer.deployment, len(answer.attempts)
    record.tier, record.usage = answer.deployment.tier, answer.completion.usage
    return web.Response(
        body=orjson.dumps(answer.completion.body),
        content_type="application/json",
        headers=answer_headers(record, answer.deployment, answer.attempts),
    )


async def _stream(
    request: web.Request, chat: ChatRequest, target: Target, record: RequestRecord
) -> web.StreamResponse:
    stream = await dispatch.open_stream(request.app, chat, target, record)
    try:
        record.timing.add("upstream", stream.first_byte_ms)
        record.deployment, record.attempts = stream.deployment, len(stream.attempts)
        record.tier, record.ttft_ms = stream.deployment.tier, record.timing.elapsed_ms()
        resp = web.StreamResponse(
            headers={
                **answer_headers(record, stream.deployment, stream.attempts),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )
        await resp.prepare(request)
        await relay(resp, stream, chat.include_usage, record)
        return resp
    finally:
        await stream.tail.aclose()


async def relay(
    resp: web.StreamResponse, stream: Stream, include_usage: bool, record: RequestRecord
) -> None:
    """Write the stream to the client; a break after the first byte ends in an error event."""
    try:
        for chunk in stream.head:
            await _write_chunk(resp, chunk, include_usage, record)
        async for chunk in stream.tail:
            await _write_chunk(resp, chunk, include_usage, record)
    except UpstreamFailure as failure:
        log.warning("stream from %s broke: %s", stream.deployment.id, failure.message)
        stream.health.record_failure(failure, time.monotonic())
        record.status = 502
        await resp.write(encode_data(orjson.dumps(_stream_error(failure))))
        return
    except BaseException:
        stream.health.release_probe()  # the client left: no verdict on the deployment
        raise
    stream.health.record_success(record.timing.elapsed_ms(), stream.first_byte_ms)
    await resp.write(DONE)


async def _write_chunk(
    resp: web.StreamResponse, chunk: Json, include_usage: bool, record: RequestRecord
) -> None:
    usage: Usage | None = usage_from_openai(chunk.get("usage"))
    if usage is not None:
        record.usage = usage
        if not include_usage:
            if not chunk.get("choices"):
                return
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            record.streamed_text.append(content)
    await resp.write(encode_data(orjson.dumps(chunk)))


def _stream_error(failure: UpstreamFailure) -> Json:
    """OpenAI's in-stream error event: never a clean end that looks like a whole answer."""
    return {
        "error": {
            "message": f"The upstream stream broke after it had started: {failure.message}",
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        }
    }
