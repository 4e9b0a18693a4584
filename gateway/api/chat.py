"""``POST /v1/chat/completions``: the path of one chat request through the gateway.

authenticate → parse → admit → embed (when routing or the semantic cache needs it) → route →
cache lookup → call upstream with failover and escalation → answer (JSON or SSE) with headers
that say what happened → store in the cache → account. Each stage lives in its own module; this
one only sequences them and records what happened on the request's ``RequestRecord``.

``serve`` is that path for any dialect: the Messages and Responses handlers translate their
request into the same ``ChatRequest`` and pass a ``Face`` that translates the answer back.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
from aiohttp import web

from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.api.connections import CONNECTION_GUARD
from gateway.api.face import ChatFace, Face
from gateway.cache.replay import assemble_chunks, replay_body, replay_chunks
from gateway.cache.semantic_cache import Hit
from gateway.core.answer import Deployment, Json, Usage
from gateway.core.appkeys import LIFECYCLE, SETTINGS
from gateway.core.chat import ChatRequest, parse_chat_request
from gateway.core.errors import GatewayError
from gateway.core.observability_settings import OBSERVABILITY_KEY
from gateway.core.requestctx import ACCOUNTED, REQUEST_ID
from gateway.pipeline import dispatch
from gateway.pipeline.accounting import account, note_answer
from gateway.pipeline.caching import CacheStage
from gateway.pipeline.dispatch import Target, tiers_after
from gateway.pipeline.request_record import RequestRecord
from gateway.pipeline.streaming import ClientWriteTimeout, client_reads, relay, replay
from gateway.routing.classifier import FloatArray
from gateway.routing.context import ROUTER, ROUTING_CONFIG, decide, prompt_vector
from gateway.routing.router import decision_headers
from gateway.routing.signals import prompt_key
from gateway.tenants.auth import Principal
from gateway.tenants.context import ADMISSION_KEY
from gateway.tenants.quotas import Reservation, rate_limit_headers
from gateway.upstream.appkeys import CATALOG

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def answer_headers(record: RequestRecord, deployment: Deployment) -> dict[str, str]:
    """What happened, in headers: routing first, then who answered and how."""
    headers = {
        **record.decision_headers,
        "x-request-id": record.request_id,
        "x-gateway-provider": deployment.provider.name,
        "x-gateway-deployment": deployment.id,
        "x-gateway-model": deployment.model.name,
        "x-gateway-tier": deployment.tier,
        "x-gateway-attempts": str(record.attempts),
        "Server-Timing": record.timing.header(),
        **record.limit_headers,
    }
    if record.escalation:
        headers["x-gateway-escalated"] = record.escalation
    if record.budget_downgraded:
        headers["x-gateway-budget"] = "downgraded"
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    principal = caller(request)
    chat = parse_chat_request(await read_body(request))
    return await serve(request, principal, chat, ChatFace(chat.include_usage))


async def serve(
    request: web.Request, principal: Principal, chat: ChatRequest, face: Face
) -> web.StreamResponse:
    """The request path for ``chat``, answered in ``face``'s dialect."""
    app = request.app
    record = RequestRecord(request[REQUEST_ID], face.api)
    record.principal, record.model, record.stream = principal, chat.model, chat.stream
    record.chat = chat
    if app[OBSERVABILITY_KEY].access_log_prompts:
        record.prompt = next((m.text for m in reversed(chat.messages) if m.role == "user"), None)
    reservation = await app[ADMISSION_KEY].admit(principal, chat)  # a refusal: the middleware's
    request[ACCOUNTED] = True  # from here on, the request's ledger row says how it ended
    record.timing.mark("admit")
    record.limit_headers = rate_limit_headers(reservation)
    try:
        response = await _answer(request, chat, record, reservation, face)
        note_answer(app, record, principal.tenant)
        # Finish the answer on the wire first: the accounting below is the gateway's business
        # and should not delay the client (for a stream this sends its final chunk marker).
        if not response.prepared:
            await response.prepare(request)
        # The end drains what the client has not read yet: a client that reads nothing would
        # hold the request (and its ledger row) for ever.
        async with client_reads(request.writer, app[SETTINGS].server.write_timeout_s):
            await response.write_eof()
        return response
    except GatewayError as error:
        record.status, record.error = error.status, error.code
        error.headers.update(record.limit_headers)
        raise
    except (asyncio.CancelledError, ConnectionResetError) as gone:
        record.status = 499  # the client went away (nginx's code for it)
        if isinstance(gone, ClientWriteTimeout):
            record.error = "client_write_timeout"
            if (guard := app.get(CONNECTION_GUARD)) is not None:
                guard.closed("write_timeout")
        raise
    except BaseException:
        record.status, record.error = 500, "internal_error"
        raise
    finally:
        await account(app, record, reservation)


def target_for(
    app: web.Application, chat: ChatRequest, record: RequestRecord, reservation: Reservation,
    text: str, vector: FloatArray | None,
) -> Target:
    """An explicit model's failover group, or the routed tiers of ``auto`` (and aliases)."""
    routing = app[ROUTING_CONFIG].settings
    if not routing.is_alias(chat.model):
        group = tuple(app[CATALOG].named(chat.model))
        record.routed_tier = group[0].tier if group else None
        return Target(group=group)
    past_soft_share = reservation.budget_share >= app[ADMISSION_KEY].soft_share
    decision = decide(app, record.request_id, text, vector, reservation.principal.tenant,
                      may_explore=not past_soft_share)
    order = app[ROUTER].plan.order
    if past_soft_share and order and decision.tier != order[0]:
        decision = replace(decision, tier=order[0], escalate=False)
        record.budget_downgraded = True
    record.route, record.decision_headers = decision.route, decision_headers(decision)
    record.routed_tier, record.learned = decision.tier, decision.learned is not None
    if decision.learned is not None and not record.budget_downgraded:
        # Only the chosen tier's: a tier that answers because every deployment of the chosen
        # one failed was not chosen by its estimate, and its outcome must not be scored so.
        record.decided = tuple(p for p in decision.learned.decided if p[0] == decision.tier)
    return Target(tiers=tiers_after(decision, order, routing.escalation), decision=decision)


async def _answer(
    request: web.Request, chat: ChatRequest, record: RequestRecord, reservation: Reservation,
    face: Face,
) -> web.StreamResponse:
    app = request.app
    cache = CacheStage.begin(request, chat, reservation.principal.tenant)
    routed = app[ROUTING_CONFIG].settings.is_alias(chat.model)
    text, vector = "", None
    if routed or cache.wants_vector:
        text, vector = await prompt_vector(app, chat)
        record.timing.mark("embed")
        record.vector, record.text_key = vector, prompt_key(text) if text else None
    target = target_for(app, chat, record, reservation, text, vector)
    decision = target.decision
    cache.route(f"{chat.model}/{decision.route}" if decision else chat.model,
                decision.cache if decision else None)  # type: ignore[arg-type]
    record.timing.mark("route")
    if (hit := await cache.lookup(vector, record)) is not None:
        record.timing.mark("cache")
        return await _from_cache(request, chat, record, target, cache, hit, face)
    record.timing.mark("cache")
    if chat.stream:
        return await _stream(request, chat, target, record, cache, vector, face)
    answer = await dispatch.complete(app, chat, target, record)
    record.timing.add("upstream", answer.upstream_ms)
    record.deployment = answer.deployment
    record.tier, record.usage = answer.deployment.tier, answer.completion.usage
    await cache.store(answer.completion.body, vector)
    body = face.answer(answer.completion.body, answer.completion.native)
    await face.finish()
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={**answer_headers(record, answer.deployment),
                 **cache.headers(), **face.headers(record.limit_headers)},
    )


async def _from_cache(
    request: web.Request, chat: ChatRequest, record: RequestRecord, target: Target,
    cache: CacheStage, hit: Hit, face: Face,
) -> web.StreamResponse:
    """Answer from the cache: free, and saying what it saved."""
    candidates = target.group or tuple(request.app[CATALOG].tier(target.tiers[0]))
    cache.account_hit(hit, candidates[0] if candidates else None, record)
    record.usage = Usage(0, 0)  # a hit uses no tokens: the reservation is given back whole
    headers = {**record.decision_headers, "x-request-id": record.request_id,
               "Server-Timing": record.timing.header(), **cache.headers(),
               **record.limit_headers, **face.headers(record.limit_headers)}
    if not chat.stream:
        body = face.answer(replay_body(hit.body), None)
        await face.finish()
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers=headers)
    resp = web.StreamResponse(headers={**headers, **SSE_HEADERS})
    await resp.prepare(request)
    writer = face.writer()
    data = replay(replay_chunks(hit.body, chat.include_usage), writer)
    await face.finish()
    await resp.write(data + writer.end())
    return resp


async def _stream(
    request: web.Request, chat: ChatRequest, target: Target, record: RequestRecord,
    cache: CacheStage, vector: FloatArray | None, face: Face,
) -> web.StreamResponse:
    stream = await dispatch.open_stream(request.app, chat, target, record)
    try:
        record.timing.add("upstream", stream.first_byte_ms)
        record.deployment = stream.deployment
        record.tier, record.ttft_ms = stream.deployment.tier, record.timing.elapsed_ms()
        resp = web.StreamResponse(headers={
            **answer_headers(record, stream.deployment), **cache.headers(),
            **face.headers(record.limit_headers), **SSE_HEADERS,
        })
        await resp.prepare(request)
        keep: list[Json] | None = [] if cache.plan.store else None
        writer = face.writer()
        if not await relay(resp, stream, writer, record, keep, lifecycle=request.app[LIFECYCLE],
                           out=request.writer,
                           write_timeout_s=request.app[SETTINGS].server.write_timeout_s):
            return resp
        await face.finish()
        await resp.write(writer.end())
        if keep is not None:
            await cache.store(assemble_chunks(keep), vector)
        return resp
    except BaseException:
        stream.health.release_probe()  # no verdict reached (a verdict already freed it)
        raise
    finally:
        await stream.tail.aclose()
