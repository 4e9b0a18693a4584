"""Quick client retries: the same tenant asking again, at once, for what it was just answered.

A client that sends a near-identical prompt (its vector's cosine similarity to the earlier one
at or over ``similarity``) within ``window_s`` of a successful answer is taken to say that the
answer did not serve. ``RecentAnswers`` keeps the tenant's latest answers with their vectors
(bounded: ``per_tenant`` each, ``max_answers`` in all, oldest forgotten first) and says, for a
new prompt, which earlier answer it retries; an answer is retried at most once. It also finds
a recent answer by request id, so feedback needs no database round trip while it is in memory.

Pure in-memory bookkeeping: touches nothing else, never waits. A check is one small matrix
product over at most ``per_tenant`` vectors.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from gateway.routing.classifier import FloatArray
from gateway.routing.signals import Answered


@dataclass(frozen=True, slots=True)
class Retry:
    """``earlier`` was asked for again by a prompt ``similarity`` away from it."""

    earlier: Answered
    similarity: float


def _unit(vector: FloatArray) -> FloatArray | None:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else None


class RecentAnswers:
    """The latest answers per tenant, for retry detection and feedback lookups."""

    def __init__(self, *, window_s: float = 120.0, similarity: float = 0.95,
                 per_tenant: int = 64, max_answers: int = 4096) -> None:
        self.window_s = window_s
        self.similarity = similarity
        self._per_tenant = per_tenant
        self._max = max_answers
        self._by_id: OrderedDict[tuple[str, str], Answered] = OrderedDict()
        self._recent: dict[str, deque[tuple[Answered, FloatArray]]] = {}
        self._retried: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    def find(self, tenant: str, request_id: str) -> Answered | None:
        return self._by_id.get((tenant, request_id))

    def replace(self, answered: Answered) -> None:
        """Keep ``answered`` for lookups by id, without making it a retry candidate."""
        self._remember(answered)

    def retry_of(self, tenant: str, vector: FloatArray | None, now_s: float) -> Retry | None:
        """The tenant's latest answer, within the window, that this prompt asks for again."""
        recent = self._recent.get(tenant)
        unit = _unit(vector) if vector is not None else None
        if not recent or unit is None:
            return None
        while recent and now_s - recent[0][0].at_s > self.window_s:
            recent.popleft()
        candidates = [(a, v) for a, v in recent if v.shape == unit.shape
                      and (tenant, a.request_id) not in self._retried]
        if not candidates:
            return None
        similarities = np.stack([v for _, v in candidates]) @ unit
        best = int(np.argmax(similarities))
        if float(similarities[best]) < self.similarity:
            return None
        earlier = candidates[best][0]
        self._retried.add((tenant, earlier.request_id))
        return Retry(earlier, float(similarities[best]))

    def add(self, answered: Answered) -> None:
        """Remember a successful answer: found by id, and a retry candidate while it is recent."""
        self._remember(answered)
        unit = _unit(answered.vector) if answered.vector is not None else None
        if unit is None:
            return
        recent = self._recent.setdefault(answered.tenant, deque(maxlen=self._per_tenant))
        recent.append((answered, unit))

    def _remember(self, answered: Answered) -> None:
        key = (answered.tenant, answered.request_id)
        self._by_id.pop(key, None)
        self._by_id[key] = answered
        self._retried.discard(key)  # a reused request id is a new answer
        while len(self._by_id) > self._max:
            (tenant, request_id), _ = self._by_id.popitem(last=False)
            self._retried.discard((tenant, request_id))
            recent = self._recent.get(tenant)
            if recent is not None:
                remaining = [(a, v) for a, v in recent if a.request_id != request_id]
                if remaining:
                    self._recent[tenant] = deque(remaining, maxlen=self._per_tenant)
                else:
                    del self._recent[tenant]
