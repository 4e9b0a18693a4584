"""The last stage of a request: settle its reservation, write its ledger row, and tell the
router what happened.

``account`` runs once per admitted chat request, whatever its outcome; ``account_embeddings``
once per embeddings call that got past its checks; ``account_refusal`` (from the error
middleware) for every 4xx the gateway answers itself before either, so that every request is on
the record: a ledger row or a refusal row, an access line and a metric.

Cost comes from the deployment's prices and the provider's usage; when a stream did not finish
(a client that left, an upstream that broke), what it had streamed (text, tool calls,
thinking) is counted with the gateway's tokenizer, its prompt taken from what the provider told
before the end if it did (Anthropic at the start, Gemini on every event, an OpenAI-compatible
server with a running usage), its output the larger of that count and the provider's, and the
row is marked ``estimated``. ``note_answer`` hands a request answered with a 200 to the routing
outcome feed (``gateway.routing.outcomes``), which learns from it. Nothing here touches SQLite
directly: the ledger and the signal store queue rows and write them in batches off the request
path.
"""

from __future__ import annotations

import time
from dataclasses import replace

from aiohttp import web

from gateway.core.answer import Usage
from gateway.core.errors import GatewayError
from gateway.core.observability_settings import OBSERVABILITY_KEY
from gateway.core.requestctx import REQUEST_ID
from gateway.observability.access_log import AccessEntry, access_log_enabled, access_log_line
from gateway.observability.genai import request_attributes
from gateway.observability.metrics import METRICS_KEY, refusal_kind
from gateway.observability.tracing import TRACING_KEY
from gateway.pipeline.request_record import RequestRecord
from gateway.routing.context import OUTCOMES
from gateway.routing.signals import Answered
from gateway.tenants.auth import Principal
from gateway.tenants.context import ADMISSION_KEY, LEDGER_KEY, PRINCIPAL
from gateway.tenants.ledger import RefusalRecord, UsageRecord
from gateway.tenants.quotas import Reservation
from gateway.tenants.rollups import EMBEDDINGS_API

API_PATHS = {
    "chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses",
    EMBEDDINGS_API: "/v1/embeddings",
}
"""The path each of the ledger's APIs is served on."""
_API_OF_PATH = {path: api for api, path in API_PATHS.items()}
UNMATCHED = "(no route)"
"""The API of a refused request whose path matched no route: one label for any path."""


def final_usage(
    app: web.Application, record: RequestRecord, reservation: Reservation
) -> Usage | None:
    """The provider's usage, or an estimate from the streamed text when the stream did not
    finish (its prompt as the provider counted it, when it said so before the end)."""
    if not record.streamed_text or (record.usage is not None and record.status == 200):
        return record.usage
    tokens = app[ADMISSION_KEY].tokens
    completion = tokens.count("".join(record.streamed_text))
    # A usage seen on a stream that did not finish may be a running one (an OpenAI-compatible
    # server's on its first chunk, or on every chunk): output streamed after it is output too.
    if (so_far := record.usage or record.usage_so_far) is not None:
        return replace(so_far, completion_tokens=max(completion, so_far.completion_tokens),
                       estimated=True)
    prompt = reservation.prompt_tokens
    if not prompt and record.chat is not None:  # admission counts only under token limits
        prompt = tokens.prompt_tokens(record.chat)
    return Usage(prompt, completion, estimated=True)


async def account(app: web.Application, record: RequestRecord, reservation: Reservation) -> None:
    """Settle, then queue the ledger row, count the metrics and write the access line."""
    usage = final_usage(app, record, reservation)
    deployment = record.deployment
    cost = deployment.cost(usage) if usage is not None and deployment is not None else 0.0
    cost += record.discarded_cost
    if record.discarded_usage is not None:
        usage = record.discarded_usage.plus(usage)
    admission = app[ADMISSION_KEY]
    if usage is None and record.status >= 400 and not cost:
        await admission.release(reservation)
    else:
        await admission.settle(reservation, usage, cost)
    row = _row(record, reservation, usage, cost)
    app[LEDGER_KEY].record(row)
    _observe(app, record, row)
    if (tracing := app.get(TRACING_KEY)) is not None:
        deployment = record.deployment
        tracing.request_done(request_attributes(
            row, provider=deployment.provider if deployment is not None else None,
            response_model=deployment.model.upstream_model if deployment is not None else None,
            escalation=record.escalation, error=record.error), failed=row.status >= 500)


def note_answer(app: web.Application, record: RequestRecord, tenant: str) -> None:
    """Hand a successful answer to the routing outcome feed (retries, feedback, learning).

    Called just before the answer's end goes out, so that feedback sent the moment the client
    has the answer finds it; it only queues (microseconds), the learning happens elsewhere."""
    outcomes = app.get(OUTCOMES)
    if outcomes is None or record.status != 200 or record.error is not None:
        return
    outcomes.answered(Answered(
        request_id=record.request_id, tenant=tenant, tier=record.tier or record.routed_tier,
        route=record.route, vector=record.vector, text_key=record.text_key,
        failed=tuple(record.failed_tiers), cached=record.cache == "hit", learned=record.learned,
        decided=record.decided,
    ))


def _row(
    record: RequestRecord, reservation: Reservation, usage: Usage | None, cost: float
) -> UsageRecord:
    principal = reservation.principal
    deployment = record.deployment
    return UsageRecord(
        request_id=record.request_id,
        tenant=principal.tenant,
        key_id=principal.key_id,
        model=record.model,
        status=record.status,
        ts=time.time(),
        route=record.route,
        tier=record.tier,
        deployment=deployment.id if deployment is not None else None,
        answered_model=deployment.model.name if deployment is not None else None,
        failed=tuple(record.failed),
        tokens_in=usage.prompt_tokens if usage is not None else 0,
        tokens_out=usage.completion_tokens if usage is not None else 0,
        cost=cost,
        estimated=usage.estimated if usage is not None else False,
        cache=record.cache,
        saved_cost=record.saved_cost,
        escalations=record.escalations,
        attempts=record.attempts,
        latency_ms=record.timing.elapsed_ms(),
        ttft_ms=record.ttft_ms,
        api=record.api,
    )


def _observe(app: web.Application, record: RequestRecord, row: UsageRecord) -> None:
    upstream_ms = record.timing.total("upstream")
    app[METRICS_KEY].request_done(
        row.route, row.tier, row.deployment, row.status, row.latency_ms / 1000,
        upstream_ms / 1000 if upstream_ms else None,
        row.ttft_ms / 1000 if row.ttft_ms is not None else None,
        row.tokens_in, row.tokens_out, row.cost, row.tenant,
    )
    settings = app[OBSERVABILITY_KEY]
    if not access_log_enabled(settings):
        return
    access_log_line(AccessEntry(
        ts=row.ts, request_id=row.request_id, method="POST", path=API_PATHS[record.api],
        status=row.status, latency_ms=row.latency_ms, tenant=row.tenant, key_id=row.key_id,
        route=row.route, tier=row.tier, model=row.model, deployment=row.deployment,
        cache=row.cache, stream=record.stream, attempts=row.attempts,
        escalations=row.escalations, upstream_ms=upstream_ms or None, ttft_ms=row.ttft_ms,
        tokens_in=row.tokens_in, tokens_out=row.tokens_out, cost=row.cost, error=record.error,
        api=record.api,
    ), settings, prompt=record.prompt)


def account_embeddings(
    request: web.Request, principal: Principal, model: str, tokens: int, status: int,
    latency_ms: float, error: str | None = None,
) -> None:
    """Queue the ledger row of one embeddings call (local work: it costs nothing) and log it."""
    row = UsageRecord(
        request_id=request[REQUEST_ID], tenant=principal.tenant, key_id=principal.key_id,
        model=model, status=status, ts=time.time(), tokens_in=tokens, latency_ms=latency_ms,
        api=EMBEDDINGS_API, answered_model=model if status < 400 else None,
    )
    app = request.app
    app[LEDGER_KEY].record(row)
    settings = app[OBSERVABILITY_KEY]
    if access_log_enabled(settings):
        access_log_line(AccessEntry(
            ts=row.ts, request_id=row.request_id, method=request.method,
            path=API_PATHS[EMBEDDINGS_API], status=status, latency_ms=latency_ms,
            tenant=row.tenant, key_id=row.key_id, model=model, tokens_in=tokens, error=error,
            api=EMBEDDINGS_API,
        ), settings)


def account_refusal(
    request: web.Request, error: GatewayError, status: int, latency_ms: float
) -> None:
    """A 4xx the gateway answered itself: a refusal row (queued), the metric, the access line."""
    app = request.app
    principal = request.get(PRINCIPAL)
    resource = request.match_info.route.resource
    refusal = RefusalRecord(
        ts=time.time(), request_id=request[REQUEST_ID],
        api=resource.canonical if resource is not None else UNMATCHED, method=request.method,
        status=status, code=error.code or error.error_type,
        tenant=principal.tenant if principal is not None else None,
        key_id=principal.key_id if principal is not None else None, param=error.param,
    )
    if (ledger := app.get(LEDGER_KEY)) is not None:
        ledger.refuse(refusal)
    if (metrics := app.get(METRICS_KEY)) is not None:
        metrics.refused(refusal_kind(error, status), refusal.tenant)
    settings = app.get(OBSERVABILITY_KEY)
    if settings is not None and access_log_enabled(settings):
        access_log_line(AccessEntry(
            ts=refusal.ts, request_id=refusal.request_id, method=refusal.method,
            path=refusal.api, status=status, latency_ms=latency_ms, tenant=refusal.tenant,
            key_id=refusal.key_id, error=refusal.code, api=_API_OF_PATH.get(refusal.api),
        ), settings)
