"""Quick client retries: the same tenant asking again, at once, for what it was just answered.

A client that sends a near-identical prompt (its vector's cosine similarity to the earlier one
at or over ``similarity``) within ``window_s`` of a successful answer is taken to say that the
answer did not serve. ``RecentAnswers`` keeps each tenant's latest answers (at most
``per_tenant``) with their unit vectors in one matrix per tenant, so that a check is a single
matrix-vector product, and says, for a new prompt, which earlier answer it retries; an answer
is retried at most once. It also finds a recent answer by request id, so feedback needs no
database round trip while the answer is in memory. At most ``max_answers`` answers are kept
in all, the oldest forgotten first; a tenant's matrix grows with its answers (doubling, up to
``per_tenant`` rows) and goes when its last answer is forgotten, so memory follows the answers
kept, whatever the number of tenants.

Pure in-memory bookkeeping: touches nothing else, never waits.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway.routing.classifier import FloatArray
from gateway.routing.signals import Answered

_FIRST_ROWS = 8


@dataclass(frozen=True, slots=True)
class Retry:
    """``earlier`` was asked for again by a prompt ``similarity`` away from it."""

    earlier: Answered
    similarity: float


def _unit(vector: FloatArray) -> FloatArray | None:
    # linalg.norm's own arithmetic for a vector, without its Python checks (twice a request).
    norm = float(np.sqrt(np.dot(vector, vector)))
    return (vector / norm).astype(np.float32, copy=False) if norm > 0 else None


@dataclass(slots=True)
class _Window:
    """One tenant's latest answers: a ring of rows (unit vector, time, retried, answer)."""

    dim: int
    capacity: int
    vectors: FloatArray = field(init=False)
    at_s: npt.NDArray[np.float64] = field(init=False)
    open: npt.NDArray[np.bool_] = field(init=False)
    """Still a retry candidate: remembered and not retried yet."""
    answers: list[Answered | None] = field(init=False)
    next: int = 0
    held: int = 0

    def __post_init__(self) -> None:
        rows = min(_FIRST_ROWS, self.capacity)
        self.vectors = np.zeros((rows, self.dim), dtype=np.float32)
        self.at_s = np.zeros(rows, dtype=np.float64)
        self.open = np.zeros(rows, dtype=bool)
        self.answers = [None] * rows

    def add(self, answered: Answered, unit: FloatArray) -> None:
        rows = len(self.answers)
        if self.held == rows and rows < self.capacity:
            self._grow(min(self.capacity, 2 * rows))
        i = self.next
        if self.answers[i] is not None:
            self.held -= 1  # the ring overwrites the oldest row
        self.vectors[i], self.at_s[i], self.open[i] = unit, answered.at_s, True
        self.answers[i] = answered
        self.held += 1
        self.next = (i + 1) % len(self.answers)

    def _grow(self, rows: int) -> None:
        old = len(self.answers)  # full: rows in ring order start at ``next``, which is 0 here
        self.vectors = np.concatenate([self.vectors, np.zeros((rows - old, self.dim),
                                                              dtype=np.float32)])
        self.at_s = np.concatenate([self.at_s, np.zeros(rows - old)])
        self.open = np.concatenate([self.open, np.zeros(rows - old, dtype=bool)])
        self.answers += [None] * (rows - old)
        self.next = old

    def forget(self, answered: Answered) -> None:
        for i, held in enumerate(self.answers):
            if held is answered:
                self.answers[i], self.open[i] = None, False
                self.held -= 1
                return

    def best(self, unit: FloatArray, since_s: float) -> tuple[int, float] | None:
        """The row most similar to ``unit`` among open rows answered at or after ``since_s``."""
        candidates = self.open & (self.at_s >= since_s)
        if not candidates.any():
            return None
        similarity = np.where(candidates, self.vectors @ unit, -np.inf)
        i = int(np.argmax(similarity))
        return i, float(similarity[i])


class RecentAnswers:
    """The latest answers per tenant, for retry detection and feedback lookups."""

    def __init__(self, *, window_s: float = 120.0, similarity: float = 0.95,
                 per_tenant: int = 64, max_answers: int = 4096) -> None:
        self.window_s = window_s
        self.similarity = similarity
        self._per_tenant = per_tenant
        self._max = max_answers
        self._by_id: OrderedDict[tuple[str, str], Answered] = OrderedDict()
        self._windows: dict[str, _Window] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def find(self, tenant: str, request_id: str) -> Answered | None:
        return self._by_id.get((tenant, request_id))

    def retry_of(self, tenant: str, vector: FloatArray | None, now_s: float) -> Retry | None:
        """The tenant's latest answer, within the window, that this prompt asks for again."""
        window = self._windows.get(tenant)
        unit = _unit(vector) if vector is not None else None
        if window is None or unit is None or unit.shape != (window.dim,):
            return None
        found = window.best(unit, now_s - self.window_s)
        if found is None or found[1] < self.similarity:
            return None
        i, similarity = found
        earlier = window.answers[i]
        assert earlier is not None  # an open row holds its answer
        window.open[i] = False
        return Retry(earlier, similarity)

    def add(self, answered: Answered) -> None:
        """Remember a successful answer: found by id, and a retry candidate while it is recent."""
        key = (answered.tenant, answered.request_id)
        if (replaced := self._by_id.pop(key, None)) is not None:
            self._forget(replaced)  # a reused request id is a new answer
        self._by_id[key] = answered
        unit = _unit(answered.vector) if answered.vector is not None else None
        if unit is not None:
            window = self._windows.get(answered.tenant)
            if window is None or window.dim != unit.shape[0]:
                window = _Window(unit.shape[0], self._per_tenant)
                self._windows[answered.tenant] = window
            window.add(answered, unit)
        while len(self._by_id) > self._max:
            self._forget(self._by_id.popitem(last=False)[1])

    def _forget(self, answered: Answered) -> None:
        window = self._windows.get(answered.tenant)
        if window is None:
            return
        window.forget(answered)
        if window.held == 0:
            del self._windows[answered.tenant]
