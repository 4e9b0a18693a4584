"""Signals in: what happened to each answered request, turned into the learner's outcomes.

``OutcomeFeed`` (one per app, under ``routing.context.OUTCOMES``) is told, once a request's
answer is on the wire, what the client got (``answered``); the request path never waits for it
and it never fails. From each answer it makes, with the weight ``[routing.outcomes]`` gives the
source:

- an answer discarded by escalation: its tier's answer was not acceptable (``escalation``), or,
  when every deployment of the tier failed, ``provider_failure``;
- the answer the client got, unless it came from the cache: acceptable (``answer``; a weak
  sign, since the client has not said anything yet);
- the same tenant asking again for a near-identical prompt within the retry window of an earlier
  answer: that earlier answer was not acceptable (``client_retry``, ``gateway.routing.retries``);

and from ``feedback`` (``POST /v1/feedback``) the tenant's own score of one of its answers, cached
ones included (the first score of an answer only: later ones are recorded, not learned). An
outcome of a tier asked after a cheaper tier's answer failed a check (the one that answered, or
one further up the chain whose answer failed in turn) is marked ``escalated``: that tier was
asked only because of the failure, so the learner keeps it out of
the tier's unconditional estimate (a tier that failed for availability selects no prompt and
leaves the next tier's outcome direct). Each
becomes an ``Outcome`` for the learner, keyed by the prompt's vector (no
vector, no outcome: the signal is still recorded). Answers, retries and feedback are also written
to the signal store, which is where feedback finds an answer that has left memory. Touches no
file itself: the signal store and the learner own theirs.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from gateway.core.routing_settings import OutcomeSettings
from gateway.routing.escalation import EscalationKind
from gateway.routing.learned.learner import Outcome
from gateway.routing.retries import RecentAnswers
from gateway.routing.signals import Answered, SignalStore


class Source(enum.StrEnum):
    """Where an outcome came from; each has its weight in ``[routing.outcomes.weights]``."""

    ANSWER = "answer"
    ESCALATION = "escalation"
    PROVIDER_FAILURE = "provider_failure"
    CLIENT_RETRY = "client_retry"
    FEEDBACK = "feedback"


class Observer(Protocol):
    """What the feed hands outcomes to: the learner's ``observe`` (never waits, never fails)."""

    def observe(self, outcome: Outcome) -> None: ...


class OutcomeFeed:
    """Turns answers, retries and feedback into learner outcomes (see the module docstring)."""

    def __init__(self, settings: OutcomeSettings, *, signals: SignalStore | None = None,
                 learner: Observer | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.settings = settings
        self.signals = signals
        self.learner = learner
        self.recent = RecentAnswers(window_s=settings.retry_window_s,
                                    similarity=settings.retry_similarity,
                                    max_answers=settings.recent_answers)
        self._clock = clock
        self._rated: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.observed = 0

    def answered(self, answered: Answered) -> None:
        """A request answered with a 200: record it, learn from it, check it for a retry."""
        if self.signals is not None:
            self.signals.answer(answered)
        selected = False  # a tier asked after a cheaper one failed a check: selected by it
        for tier, reason in answered.failed:
            failed = reason == EscalationKind.TIER_FAILED
            source = Source.PROVIDER_FAILURE if failed else Source.ESCALATION
            self._observe(answered, tier, 0.0, source, escalated=selected)
            selected = selected or not failed
        if not answered.cached:
            self._observe(answered, answered.tier, 1.0, Source.ANSWER)
        if self.settings.retry_window_s > 0:
            retry = self.recent.retry_of(answered.tenant, answered.vector, answered.at_s)
            if retry is not None:
                if self.signals is not None:
                    self.signals.client_retry(retry.earlier, answered.request_id,
                                              retry.similarity)
                self._observe(retry.earlier, retry.earlier.tier, 0.0, Source.CLIENT_RETRY)
        self.recent.add(answered)

    async def find(self, tenant: str, request_id: str) -> Answered | None:
        """``tenant``'s answer under ``request_id``: from memory, else from the signal store."""
        found = self.recent.find(tenant, request_id)
        if found is None and self.signals is not None:
            found = await self.signals.find_answer(request_id, tenant)
        return found

    async def feedback(self, answered: Answered, score: float, comment: str | None) -> bool:
        """The tenant scored ``answered`` (0 bad .. 1 good): record it, and learn from it when
        it is the first score of that answer (True). Later scores are recorded only, so that
        one tenant repeating itself cannot outweigh everyone else's outcomes."""
        key = (answered.tenant, answered.request_id)
        first = key not in self._rated
        self._rated[key] = None  # before any wait: a concurrent score sees it
        while len(self._rated) > self.settings.recent_answers:
            self._rated.popitem(last=False)
        if first and self.signals is not None:
            first = not await self.signals.rated(answered.request_id, answered.tenant)
        if self.signals is not None:
            self.signals.feedback(answered, score, comment, counted=first)
        if first:
            self._observe(answered, answered.tier, score, Source.FEEDBACK)
        return first

    def _observe(self, answered: Answered, tier: str | None, acceptable: float,
                 source: Source, *, escalated: bool | None = None) -> None:
        """``escalated`` None: the answer's own tier, escalated when a check failed before it."""
        weight = self.settings.weight(source.value)
        if self.learner is None or tier is None or answered.vector is None or weight <= 0:
            return
        if escalated is None:
            escalated = after_escalation(answered)
        self.learner.observe(Outcome(answered.vector, tier, acceptable, weight, self._clock(),
                                     answered.tenant, source.value, escalated,
                                     answered.decided_for(tier)))
        self.observed += 1


def after_escalation(answered: Answered) -> bool:
    """Whether ``answered``'s tier answered only because a cheaper tier's answer failed a check
    (not because every deployment of it failed: that selects no prompt)."""
    return any(reason != EscalationKind.TIER_FAILED for _, reason in answered.failed)
