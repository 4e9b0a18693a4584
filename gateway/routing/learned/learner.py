"""The learner: remembered outcomes of past prompts, and each tier's estimate for a new one.

An ``Outcome`` says how acceptable (0..1) one tier's answer was for one prompt vector, with a
weight, a wall-clock time, the tenant and its source (feedback, escalation, retry, failure,
replay). ``Learner.observe`` only appends to a bounded queue (it never waits and never fails:
a full queue drops and counts); a background task started by ``start`` folds the queue into
memory in steps of at most ``step_budget_ms`` (so no step holds the event loop longer) and
persists outcomes to SQLite (``learning.sqlite3``); ``start`` restores them, ``close`` writes
what is left.

``Learner.estimate(vector, tiers, tenant, prior)`` answers, for each tier, the probability of an
acceptable answer: the outcomes of the ``k`` nearest remembered prompts on that tier, each
weighted by similarity and by recency (half its weight every ``half_life_s``), shrunk towards
the prior (the intent decision's view: ``prior_weight`` outcomes' worth) and the tier's overall
rate. With nothing remembered the estimate is the prior itself, so a cold start decides as the
intent routes do. Memory is bounded per scope (``global`` or one per tenant). Touches only its
SQLite file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.routing.policy import TierEstimate
from gateway.routing.settings import LearningSettings

FloatArray = npt.NDArray[np.float32]


class Source:
    """Where an outcome came from (free strings are allowed; these are the gateway's own)."""

    FEEDBACK = "feedback"
    ESCALATION = "escalation"
    RETRY = "retry"
    FAILURE = "failure"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How acceptable ``tier``'s answer was (0: not at all, 1: fully) for the prompt whose
    embedding is ``vector``; ``weight`` scales its say (a click of feedback may count more
    than an inferred retry); ``at_s`` is wall-clock seconds (``time.time()``)."""

    vector: FloatArray
    tier: str
    acceptable: float
    weight: float = 1.0
    at_s: float = 0.0
    tenant: str | None = None
    source: str = Source.FEEDBACK


@dataclass(frozen=True, slots=True)
class LearnerStats:
    """What the learner holds: outcomes remembered (all scopes), waiting, dropped (queue
    full), and whether the persisted state has been restored."""

    remembered: int
    pending: int
    dropped: int
    loaded: bool


Prior = Mapping[str, float]
"""Each tier's acceptability before any outcome: what the intent decision implies."""


class Learner:
    """Outcome memory and estimates (see the module docstring). ``path`` None: in memory
    only (replay, tests); ``clock`` gives wall-clock seconds."""

    def __init__(
        self, settings: LearningSettings, *, path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.path = path
        self.clock = clock

    def observe(self, outcome: Outcome) -> None:
        """Queue ``outcome`` for learning; never waits, never raises (a full queue drops)."""
        raise NotImplementedError

    def learn(self, outcomes: Iterable[Outcome]) -> None:
        """Fold ``outcomes`` into memory now, synchronously (replay, evaluation, tests)."""
        raise NotImplementedError

    def estimate(
        self, vector: FloatArray, tiers: Sequence[str], tenant: str | None = None,
        prior: Prior | None = None,
    ) -> dict[str, TierEstimate]:
        """Each of ``tiers``' probability of an acceptable answer for ``vector``.

        ``prior`` (default: 0.5 for every tier) is what the estimate is with no evidence. The
        memory consulted is the global one, or ``tenant``'s when the scope is ``tenant``.
        """
        raise NotImplementedError

    async def start(self) -> None:
        """Restore the persisted outcomes and start the background learning task."""
        raise NotImplementedError

    async def drained(self) -> None:
        """Return once every outcome observed so far is in memory (tests wait on this)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Learn and persist what is queued, stop the task, close the file."""
        raise NotImplementedError

    def stats(self) -> LearnerStats:
        raise NotImplementedError
