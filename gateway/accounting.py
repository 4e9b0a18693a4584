"""The last stage of a request: settle its reservation and write its ledger row.

Runs once per admitted request, whatever its outcome. Cost comes from the deployment's prices
and the provider's usage; when a stream ended without usage, the completion is counted with the
gateway's tokenizer and the row is marked ``estimated``. Nothing here touches SQLite directly:
the ledger queues the row and writes it in a batch off the request path.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.providers.base import Usage
from gateway.request_record import RequestRecord
from gateway.tenants.context import ADMISSION_KEY, LEDGER_KEY
from gateway.tenants.ledger import UsageRecord
from gateway.tenants.quotas import Reservation


def final_usage(
    app: web.Application, record: RequestRecord, reservation: Reservation
) -> Usage | None:
    """The provider's usage, or an estimate from the streamed text when it sent none."""
    if record.usage is not None or not record.streamed_text:
        return record.usage
    tokens = app[ADMISSION_KEY].tokens
    completion = tokens.count("".join(record.streamed_text))
    return Usage(reservation.prompt_tokens, completion, estimated=True)


async def account(app: web.Application, record: RequestRecord, reservation: Reservation) -> None:
    admission = app[ADMISSION_KEY]
    usage = final_usage(app, record, reservation)
    deployment = record.deployment
    cost = deployment.cost(usage) if usage is not None and deployment is not None else 0.0
    cost += record.discarded_cost
    if usage is None and record.status >= 400 and not cost:
        await admission.release(reservation)
    else:
        await admission.settle(reservation, usage, cost)
    principal = reservation.principal
    app[LEDGER_KEY].record(UsageRecord(
        request_id=record.request_id,
        tenant=principal.tenant,
        key_id=principal.key_id,
        model=record.model,
        status=record.status,
        ts=time.time(),
        route=record.route,
        tier=record.tier,
        deployment=deployment.id if deployment else None,
        tokens_in=usage.prompt_tokens if usage else 0,
        tokens_out=usage.completion_tokens if usage else 0,
        cost=cost,
        estimated=usage.estimated if usage else False,
        cache=record.cache,
        saved_cost=record.saved_cost,
        escalations=record.escalations,
        attempts=record.attempts,
        latency_ms=record.timing.elapsed_ms(),
        ttft_ms=record.ttft_ms,
    ))
