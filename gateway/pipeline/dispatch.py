"""Calling upstream for one request: a failover group, or tiers with cheap-first escalation.

An explicit model name is one failover group. ``model: "auto"`` is a ``Target`` with the routed
tier first and the stronger tiers after it: when every deployment of a tier fails, or (for whole
answers) the answer fails a check (``gateway.routing.escalation``), the next tier is asked. A
stream can only escalate before its first byte: when every deployment of the tier failed or its
streams ended empty. An answer discarded by escalation was still paid for: its cost is kept on
the request's record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from gateway.core.answer import Deployment
from gateway.core.chat import ChatRequest
from gateway.core.errors import GatewayError, ServiceUnavailable, UpstreamFailed
from gateway.observability.metrics import METRICS_KEY
from gateway.pipeline.request_record import RequestRecord
from gateway.routing.context import SIGNALS
from gateway.routing.escalation import EscalationReason, check_answer, check_failure
from gateway.routing.policy import Decision
from gateway.upstream.appkeys import CATALOG, FAILOVER
from gateway.upstream.failover import Answer, Stream, failed_deployments

T = TypeVar("T", Answer, Stream)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request may go: one group (explicit model) or tiers in escalation order."""

    group: tuple[Deployment, ...] = ()
    tiers: tuple[str, ...] = ()
    decision: Decision | None = None


@dataclass(slots=True)
class _Escalator:
    app: web.Application
    target: Target
    record: RequestRecord
    tried: list[str] = field(default_factory=list)

    def stages(self) -> list[tuple[str, list[Deployment]]]:
        catalog = self.app[CATALOG]
        if self.target.decision is None:
            return [("", list(self.target.group))]
        return [(t, d) for t in self.target.tiers if (d := catalog.tier(t))]

    def escalate(self, tier: str, to: str | None, reason: EscalationReason,
                 deployment: str | None = None) -> None:
        self.record.escalations += to is not None
        self.record.escalation = f"{tier}->{to}: {reason.kind.value}" if to else None
        if to is not None:
            self.record.failed_tiers.append((tier, reason.kind.value))
            self.app[METRICS_KEY].escalated(tier, to, reason.kind.value)
        signals = self.app.get(SIGNALS)
        if signals is not None and self.target.decision is not None:
            signals.escalation(self.record.request_id, self.target.decision, tier, to, reason,
                               deployment)

    def note_attempts(self, tier: str, answer: Answer | Stream) -> None:
        self.record.attempts += len(answer.attempts)
        self.record.failed.extend(failed_deployments(answer.attempts))
        signals = self.app.get(SIGNALS)
        if signals is not None:
            route = self.target.decision.route if self.target.decision else None
            signals.attempts(self.record.request_id, route, tier or None, answer.attempts)


async def _run(
    app: web.Application, target: Target, record: RequestRecord,
    attempt: Callable[[list[Deployment]], Awaitable[T]],
    check: Callable[[T], EscalationReason | None],
) -> T:
    """Try the target's stages in order: a stage whose every deployment failed, or whose
    result fails ``check``, passes the request on to the next stage (when there is one)."""
    esc = _Escalator(app, target, record)
    stages = esc.stages()
    for i, (tier, deployments) in enumerate(stages):
        following = stages[i + 1][0] if i + 1 < len(stages) else None
        try:
            result = await attempt(deployments)
        except GatewayError as error:
            record.attempts += error.attempts  # a provider's 400 passed on was a call too
            if isinstance(error, UpstreamFailed):
                record.failed.extend(error.deployments)
            reason = check_failure(error)
            if following is None or reason is None:
                raise
            esc.escalate(tier, following, reason)
            continue
        esc.note_attempts(tier, result)
        reason = check(result) if target.decision else None
        if reason is None or following is None:
            return result
        esc.escalate(tier, following, reason, _discard(record, result))
    raise ServiceUnavailable("No deployment serves the routed tiers.", code="no_deployment")


def _discard(record: RequestRecord, result: object) -> str | None:
    """Keep what a discarded answer cost (it was paid for); its deployment id for signals."""
    if not isinstance(result, Answer):
        return None
    if (usage := result.completion.usage) is not None:
        record.discarded_cost += result.deployment.cost(usage)
        record.discarded_usage = usage.plus(record.discarded_usage)
    return result.deployment.id


async def complete(
    app: web.Application, chat: ChatRequest, target: Target, record: RequestRecord
) -> Answer:
    """The answer to ``chat``, escalating through the target's tiers as needed."""
    failover = app[FAILOVER]
    return await _run(app, target, record, lambda d: failover.complete(chat, d),
                      lambda answer: check_answer(chat, answer.completion))


async def open_stream(
    app: web.Application, chat: ChatRequest, target: Target, record: RequestRecord
) -> Stream:
    """An open stream for ``chat``; tiers escalate only on failures before the first byte."""
    failover = app[FAILOVER]
    return await _run(app, target, record, lambda d: failover.open_stream(chat, d),
                      lambda _: None)


def tiers_after(decision: Decision, order: Sequence[str], escalation: bool) -> tuple[str, ...]:
    """The decision's tier, then (when it may escalate) every stronger tier in ``order``."""
    if not (escalation and decision.escalate) or decision.tier not in order:
        return (decision.tier,)
    return tuple(order[order.index(decision.tier):])
