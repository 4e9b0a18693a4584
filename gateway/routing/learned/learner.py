"""The learner: remembered outcomes of past prompts, and each tier's estimate for a new one.

An ``Outcome`` says how acceptable (0..1) one tier's answer was for one prompt vector, with a
weight, a wall-clock time, the tenant and its source (feedback, escalation, retry, failure,
replay). ``Learner.observe`` only appends to a bounded queue (it never waits and never fails:
a full queue drops and counts); a background task started by ``start`` has the queue folded
into memory in a worker thread (the graph update and the products release the GIL, so the event
loop is not held; an estimate waits for at most one outcome's fold) and persists outcomes to
SQLite (``learning.sqlite3``); ``start`` restores them, ``close`` writes what is left.

``Learner.estimate(vector, tiers, tenant, prior)`` answers, for each tier, the probability of an
acceptable answer, pooling three things: the prior (the intent decision's view, ``prior_weight``
outcomes' worth); the tier's ridge regression over the whole embedding (``linear.Linear``,
``linear_weight`` outcomes' worth); and the outcomes of the ``k`` nearest remembered prompts on
that tier whose cosine similarity reaches the absolute ``floor``, each weighted by its
similarity relative to the nearest one's (or to ``anchor`` when the nearest is below it) and by
recency (half its weight every ``half_life_s``).
With no remembered prompt above the floor (nothing learned, or only unrelated prompts) the
estimate is the prior itself, so a cold start, or a prompt unlike any seen, decides as the intent
routes do. An outcome observed after an escalation (the tier was asked only because a cheaper
tier's answer failed) is conditioned on that failure: it says how the tier does on the prompts
its cheaper tier fails, not on prompts like this one, so it counts ``escalated_weight`` of its
weight in its tier's estimate (0 by default: not at all; it is still written, so a changed
setting restores it, the linear checkpoint then rebuilt from the kept outcomes); the cheaper
tier's failure is an outcome of its own and counts in full.
The linear statistics are refitted off the event loop (a worker thread) and checkpointed beside
the outcomes. So is each tier's bias: how far the outcomes that came back ran from the estimate
the policy decided with (``Outcome.decided``, its intent prior included), recency-weighted; a
restart scores the outcomes written after the checkpoint again, so a crash loses none of it.
Memory is bounded per scope (``global`` or one per tenant). Touches only its SQLite file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.core.lifecycle import stop_task
from gateway.core.routing_settings import LearningSettings
from gateway.routing.learned.linear import Linear
from gateway.routing.learned.memory import Memory, Neighbours, Projection
from gateway.routing.learned.store import OutcomeStore, StoredLinear, StoredOutcome
from gateway.routing.policy import TierEstimate

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
NEUTRAL_PRIOR = 0.5
_RESTORE_THREADS = 2  # start-up, before requests: both cores
_BATCH = 256  # outcomes handed to the worker thread at once
_ERROR_DECAY = 0.999  # the decisions' bias is measured over about the last 1,000 outcomes
_ERROR_PRIOR = 20.0  # outcomes' worth of "no bias" while few have come back


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
    than an inferred retry); ``at_s`` is wall-clock seconds (``time.time()``, the learner's
    clock): left at 0 an outcome dates from 1970 and has decayed to nothing. ``escalated``:
    observed after an escalation, i.e. only because a cheaper tier's answer failed (it counts
    ``escalated_weight`` of ``weight`` in its tier's estimate). ``decided``: the estimate of
    ``tier`` the learned policy chose with (before any bias correction), which ``Learner.bias``
    scores the outcome against; None when no learned estimate chose the tier (the intent routes
    decided, or the decision explored)."""

    vector: FloatArray
    tier: str
    acceptable: float
    weight: float = 1.0
    at_s: float = 0.0
    tenant: str | None = None
    source: str = Source.FEEDBACK
    escalated: bool = False
    decided: float | None = None


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
        self._projection = Projection(settings.dim, settings.seed)
        self._memories: dict[str, Memory] = {}
        self._linear: dict[str, Linear] = {}
        self._errors: dict[str, list[float]] = {}
        # hnswlib's search is not safe during an update of the same graph; re-entrant: a fold
        # scores the estimate for its outcome first.
        self._lock = threading.RLock()
        self._folding: asyncio.Future[None] | None = None
        self._tiers: dict[str, int] = {}
        self._queue: deque[Outcome] = deque()
        self._unsaved: list[StoredOutcome] = []
        self._saved_since_trim = 0
        self._dropped = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._store: OutcomeStore | None = None
        self._loaded = path is None
        self._closing = False

    # -- learning ---------------------------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        """Queue ``outcome`` for learning; never waits, never raises (a full queue drops)."""
        if self._closing or len(self._queue) >= self.settings.queue or not _usable(outcome):
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("learner: %d outcomes dropped (queue full, closed or unusable)",
                            self._dropped)
            return
        self._queue.append(outcome)
        self._idle.clear()
        self._wake.set()

    def learn(self, outcomes: Iterable[Outcome]) -> None:
        """Fold ``outcomes`` into memory now, synchronously (replay, evaluation, tests)."""
        batch = [o for o in outcomes if _usable(o)]
        if batch:
            self._fold(batch)
            self.refit()

    def refit(self) -> None:
        """Solve the linear estimates again for what was folded since (milliseconds of
        LAPACK without the GIL: the background task runs it in a worker thread)."""
        for linear in list(self._linear.values()):
            linear.refit()

    def _fold(self, outcomes: Sequence[Outcome], threads: int = 1,
              to_linear: bool = True, score: bool = True) -> None:
        if score:
            for o in outcomes:
                self._score(o)
        by_scope: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_scope.setdefault(self._scope(o.tenant), []).append(o)
        for scope, every in by_scope.items():
            items = [o for o in every if self._say(o) > 0]
            try:
                vectors = self._projection(np.stack([o.vector for o in items or every]))
            except ValueError as exc:  # a vector of another size: a changed model
                self._dropped += len(every)
                log.warning("learner: %d outcomes dropped: %s", len(every), exc)
                continue
            if self._store is not None:  # kept on disk even when they carry no weight now
                self._unsaved.extend(_stored(scope, o) for o in every)
            if not items:
                continue
            memory = self._memories.get(scope)
            if memory is None:
                memory = Memory(vectors.shape[1], self.settings.max_outcomes)
                self._memories[scope] = memory
            if to_linear:
                self._fold_linear(scope, items)
            memory.add(
                vectors,
                np.array([self._tier_code(o.tier) for o in items], dtype=np.int16),
                np.array([o.acceptable for o in items], dtype=np.float32),
                np.array([self._say(o) for o in items], dtype=np.float32),
                np.array([o.at_s for o in items], dtype=np.float64),
                self.settings.half_life_s, threads=threads,
            )

    def _say(self, o: Outcome) -> float:
        """``o``'s weight in its tier's estimate: an outcome observed after an escalation keeps
        only ``escalated_weight`` of it (it was selected by a cheaper tier's failure)."""
        return o.weight * self.settings.escalated_weight if o.escalated else o.weight

    def _score(self, o: Outcome) -> None:
        """Record how far ``o`` ran from the estimate its tier was chosen with (only for an
        outcome of a learned, unexplored choice, and not for one selected by a cheaper tier's
        failure: the tier was then chosen by that failure, not by its estimate)."""
        if o.decided is None or o.escalated or not math.isfinite(o.decided):
            return
        error = self._errors.setdefault(o.tier, [0.0, 0.0])
        error[0] = error[0] * _ERROR_DECAY + o.weight * (o.acceptable - o.decided)
        error[1] = error[1] * _ERROR_DECAY + o.weight

    def bias(self, tier: str) -> float:
        """How far the outcomes of ``tier`` ran from the estimates the policy chose it with
        (outcome less estimate, weighted: negative when the decisions expected too much), over
        recent outcomes (about the last thousand; shrunk towards 0 while there are few). It is
        measured on the decisions themselves, with their intent prior, and only where the
        estimate chose the tier: a prompt goes to the cheap tier exactly where its estimate
        looks high, which is the selection this corrects (bench/RESULTS.md, issue 15, fifth and
        sixth rounds)."""
        total, count = self._errors.get(tier, (0.0, 0.0))
        return total / (count + _ERROR_PRIOR)

    def _fold_linear(self, scope: str, items: Sequence[Outcome]) -> None:
        linear = self._linear.get(scope)
        if linear is None:
            s = self.settings
            linear = Linear(len(items[0].vector), s.ridge, s.half_life_s)
            self._linear[scope] = linear
        for o in items:
            say = self._say(o)
            if len(o.vector) == linear.dim and say > 0:
                linear.add(np.asarray(o.vector, dtype=np.float32), o.tier, o.acceptable,
                           say, o.at_s)

    def _tier_code(self, tier: str) -> int:
        return self._tiers.setdefault(tier, len(self._tiers))

    def _scope(self, tenant: str | None) -> str:
        return (tenant or "") if self.settings.scope == "tenant" else ""

    # -- estimating -------------------------------------------------------------------------

    def estimate(
        self, vector: FloatArray, tiers: Sequence[str], tenant: str | None = None,
        prior: Prior | None = None,
    ) -> dict[str, TierEstimate]:
        """Each of ``tiers``' probability of an acceptable answer for ``vector``.

        ``prior`` (default: 0.5 for every tier) is what the estimate is with no evidence. The
        memory consulted is the global one, or ``tenant``'s when the scope is ``tenant``.
        """
        prior = prior or {}
        memory = self._memories.get(self._scope(tenant))
        with self._lock:
            hood = self._neighbours(memory, vector)
        if memory is None or hood is None:
            return {t: TierEstimate(prior.get(t, NEUTRAL_PRIOR), 0.0, 0) for t in tiers}
        s, now = self.settings, self.clock()
        # An absolute floor first: below it a remembered prompt is unrelated, however near it
        # ranks in a sparse memory, and carries no weight (nothing above it: the prior rules).
        near = hood.similarity >= s.floor
        if not near.any():
            return {t: TierEstimate(prior.get(t, NEUTRAL_PRIOR), 0.0, 0) for t in tiers}
        age = np.maximum(now - hood.at_s, 0.0)
        # Above the floor, relative to the nearest: similarities of related prompts sit
        # anywhere from 0.3 to 0.9 depending on their length and wording; their ranking matters.
        # Relative to ``anchor`` when even the nearest is below it: a prompt of a kind not seen
        # yet then rests less on its far neighbours and more on the prior and the linear fit.
        # Off (0), the nearest itself, even below 0 (a floor below 0 lets such prompts count).
        top = hood.similarity.max()
        closeness = hood.similarity - (max(top, s.anchor) if s.anchor > 0.0 else top)
        weights = (near * hood.weight * np.exp(s.sharpness * closeness)
                   * np.exp2(-age / s.half_life_s))
        linear = self._linear.get(self._scope(tenant))
        # Per tier code at once (one pass each, not one per tier): the neighbours' weight, the
        # weight of their acceptable outcomes, and how many weigh anything.
        codes, size = hood.tier.astype(np.intp), len(self._tiers)
        evidence = np.bincount(codes, weights=weights, minlength=size).tolist()
        accepted = np.bincount(codes, weights=weights * hood.acceptable, minlength=size).tolist()
        counts = np.bincount(codes[weights > 0], minlength=size).tolist()
        out = {}
        for t in tiers:
            code = self._tiers.get(t)  # a tier the worker thread coded after ``size``: unseen here
            seen = ((0.0, 0.0, 0) if code is None or code >= size
                    else (evidence[code], accepted[code], counts[code]))
            out[t] = self._tier_estimate(t, prior.get(t, NEUTRAL_PRIOR), seen, linear, vector, now)
        return out

    def _tier_estimate(
        self, tier: str, p0: float, seen: tuple[float, float, int], linear: Linear | None,
        vector: FloatArray, now: float,
    ) -> TierEstimate:
        """The prior, the linear estimate (``linear_weight`` outcomes' worth, less while it rests
        on fewer outcomes than it has coefficients) and the weighted neighbours (``seen``: their
        weight, the weight of the acceptable ones, their count), pooled."""
        s = self.settings
        evidence, accepted, count = seen
        base, p_lin = 0.0, 0.0
        if linear is not None:
            p_lin, total = linear.estimate(vector, tier, now)
            # Full say once it rests on as many outcomes as it has coefficients: before that
            # it is underdetermined, little more than the tier's overall rate.
            base = s.linear_weight * min(1.0, total / (linear.dim + 1))
        if count == 0 and base == 0.0:
            return TierEstimate(p0, 0.0, 0)
        p = (s.prior_weight * p0 + base * p_lin + accepted) / (s.prior_weight + base + evidence)
        return TierEstimate(p, evidence + base, count)

    def _neighbours(self, memory: Memory | None, vector: FloatArray) -> Neighbours | None:
        if memory is None or memory.size == 0:
            return None
        try:
            projected = self._projection(vector)
        except ValueError:
            return None  # a vector of another size: no evidence, the prior decides
        return memory.nearest(projected[0], self.settings.k)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the persisted outcomes and start the background learning task."""
        if self.path is not None:
            self._store = await OutcomeStore.open(self.path)
            rows = await self._store.load(self.settings.max_outcomes)
            linear = await self._store.load_linear(self.settings.escalated_weight)
            saved_bias = await self._store.load_bias()
            self._errors = {t: [e, n] for t, (e, n, _) in saved_bias.items()}
            bias_through = {t: through for t, (_, _, through) in saved_bias.items()}
            if rows or linear:
                await asyncio.to_thread(self._restore, rows, linear, bias_through)
            await self._store.trim(self.settings.max_outcomes)
            self._loaded = True
            log.info("learner: %d outcomes restored from %s", len(rows), self.path)
        self._task = asyncio.create_task(self._run(), name="routing-learner")

    def _restore(self, rows: Sequence[StoredOutcome], linear: Sequence[StoredLinear],
                 bias_through: Mapping[str, int]) -> None:
        """The outcomes into the neighbours' memory; the saved linear statistics and each
        tier's bias, with the outcomes written after them folded in and scored (all, for none
        saved)."""
        outcomes = [
            Outcome(r.vector, r.tier, r.acceptable, r.weight, r.at_s, r.tenant, r.source,
                    r.escalated, r.decided)
            for r in rows
        ]
        store, self._store = self._store, None  # restored rows are on disk already
        try:
            self._fold(outcomes, threads=_RESTORE_THREADS, to_linear=False, score=False)
        finally:
            self._store = store
        for row, o in zip(rows, outcomes, strict=True):
            if row.row_id > bias_through.get(row.tier, 0):
                self._score(o)
        # Each (scope, tier) from its own row: each row commits alone (autocommit), so a
        # process that died while checkpointing left tiers saved as of different rows.
        through: dict[tuple[str, str], int] = {}
        for saved in linear:
            scope_linear = self._linear.setdefault(saved.scope, Linear(
                saved.state.a.shape[0] - 1, self.settings.ridge, self.settings.half_life_s))
            scope_linear.restore([saved.state])
            through[saved.scope, saved.state.tier] = saved.through_id
        for row, o in zip(rows, outcomes, strict=True):
            if row.row_id > through.get((row.scope, row.tier), 0):
                self._fold_linear(row.scope, [o])
        self.refit()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                # Folded in a worker thread: hnswlib's update and numpy's products run without
                # the GIL, so the event loop is never held by a graph update (~0.25 ms each).
                self._folding = loop.run_in_executor(None, self._fold_each, batch)
                try:
                    await asyncio.shield(self._folding)  # close() waits for a batch under way
                except Exception:  # one bad batch must not stop learning for good
                    log.exception("learning: folding %d outcomes failed; they are dropped",
                                  len(batch))
                    self._dropped += len(batch)
            try:
                # Nothing folds while this runs: this task is the only one that folds.
                await asyncio.to_thread(self.refit)
                await self._save()
            except Exception:
                log.exception("learning: refitting or saving failed; tried again after the "
                              "next outcomes")
            if not self._queue:
                self._idle.set()

    def _fold_each(self, batch: Sequence[Outcome]) -> None:
        """Fold ``batch`` one outcome at a time, each under the lock that estimates take: an
        estimate waits for one graph update at most, never for the batch."""
        for o in batch:
            with self._lock:
                self._fold([o])

    async def _save(self) -> None:
        if self._store is None or not self._unsaved:
            return
        rows, self._unsaved = self._unsaved, []
        try:
            await self._store.append(rows)
            self._saved_since_trim += len(rows)
            if self._saved_since_trim >= max(1, self.settings.max_outcomes // 4):
                await self._store.trim(self.settings.max_outcomes)
                await self._save_linear()
                self._saved_since_trim = 0
        except Exception:  # a full disk must not stop learning; the memory still has them
            log.exception("learner: could not write %d outcomes", len(rows))

    async def _save_linear(self) -> None:
        """Checkpoint the linear statistics (every ``max_outcomes // 4`` outcomes and at close:
        a restart folds in only the outcomes written since)."""
        if self._store is None:
            return
        for scope, linear in list(self._linear.items()):
            states = await asyncio.to_thread(linear.state)
            await self._store.save_linear(scope, states, self.settings.escalated_weight)
        await self._store.save_bias({t: (e, n) for t, (e, n) in self._errors.items()})

    async def drained(self) -> None:
        """Return once every outcome observed so far is in memory and written."""
        while self._queue or not self._idle.is_set():
            if self._task is None or self._task.done():
                self._fold(list(self._queue))
                self._queue.clear()
                self.refit()
                await self._save()
                self._idle.set()
                return
            await self._idle.wait()

    async def close(self) -> None:
        """Learn and persist what is queued, stop the task, close the file."""
        self._closing = True
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self._folding is not None:
            await asyncio.wait([self._folding])  # a batch the worker thread is still folding
            self._folding = None
        with self._lock:
            self._fold(list(self._queue))
        self._queue.clear()
        await self._save()
        try:
            await self._save_linear()
        except Exception:  # a full disk: the outcomes rebuild the statistics at the next start
            log.exception("learner: could not write the linear statistics")
        self._idle.set()
        if self._store is not None:
            await self._store.close()
            self._store = None

    def stats(self) -> LearnerStats:
        # Snapshots (list() copies a dict's values in one step under the GIL): the worker thread
        # adds a scope's memory on its first outcome, and iterating the dict itself while it
        # grows raises RuntimeError, here a 500 from the dashboard's routing page.
        return LearnerStats(
            remembered=sum(m.size for m in list(self._memories.values())),
            pending=len(self._queue),
            dropped=self._dropped,
            loaded=self._loaded,
        )

    def memory_bytes(self) -> int:
        """Approximately what the remembered outcomes take in memory, over all scopes."""
        return (sum(m.approximate_bytes() for m in list(self._memories.values()))
                + sum(lin.approximate_bytes() for lin in list(self._linear.values())))


def _usable(o: Outcome) -> bool:
    vector = np.asarray(o.vector)
    return (
        vector.ndim == 1 and vector.size > 0 and bool(np.isfinite(vector).all())
        and 0.0 <= o.acceptable <= 1.0 and math.isfinite(o.weight) and o.weight > 0
        and math.isfinite(o.at_s) and bool(o.tier)
    )


def _stored(scope: str, o: Outcome) -> StoredOutcome:
    return StoredOutcome(scope, np.asarray(o.vector, dtype=np.float32), o.tier, o.acceptable,
                         o.weight, o.at_s, o.tenant, o.source, o.escalated, o.decided)
