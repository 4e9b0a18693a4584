"""The bounded memory of one scope's outcomes: an hnswlib graph of prompt vectors and a ring.

``Projection`` maps embeddings to ``dim`` dimensions with a fixed, seeded random orthonormal
basis (then normalises again): it keeps cosine neighbourhoods close enough for a k-nearest
estimate and bounds memory (100,000 outcomes at 192 dimensions take about 90 MB of graph).

``Memory`` holds at most ``capacity`` outcomes in slots reused in a ring: the oldest outcome's
slot is overwritten first, in the graph too (hnswlib updates a label in place). Beside the graph
it keeps each slot's tier, acceptability, weight and time in numpy arrays, and each tier's
recency-weighted overall rate (``TierRate``). Used from one thread at a time (the event loop):
the learner never searches while it inserts. Touches no file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import hnswlib
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
_M = 12
_EF_CONSTRUCTION = 32  # one update of a full memory: ~0.25 ms of CPU (p99 0.9 ms, 100,000 outcomes)
_MIN_EF = 48


class Projection:
    """A seeded random orthonormal projection to ``dim`` dimensions (identity when the input
    has ``dim`` dimensions or fewer); built for the first input size it sees."""

    def __init__(self, dim: int, seed: int) -> None:
        self.dim = dim
        self.seed = seed
        self._basis: FloatArray | None = None
        self.input_dim: int | None = None

    def out_dim(self, input_dim: int) -> int:
        return min(self.dim, input_dim)

    def __call__(self, vectors: FloatArray) -> FloatArray:
        """Rows of ``vectors`` projected and normalised to unit length."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if self.input_dim is None:
            self.input_dim = x.shape[1]
            if x.shape[1] > self.dim:
                rng = np.random.default_rng(self.seed)
                q, _ = np.linalg.qr(rng.standard_normal((x.shape[1], self.dim)))
                self._basis = np.ascontiguousarray(q, dtype=np.float32)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"vector of size {x.shape[1]}, expected {self.input_dim}")
        y = x @ self._basis if self._basis is not None else x.copy()
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return np.ascontiguousarray(y / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(slots=True)
class TierRate:
    """A tier's overall acceptability with recency decay: sums halved every half-life."""

    total: float = 0.0
    accepted: float = 0.0
    at_s: float = 0.0

    def add(self, acceptable: float, weight: float, at_s: float, half_life_s: float) -> None:
        self.decay_to(at_s, half_life_s)
        self.total += weight
        self.accepted += weight * acceptable

    def remove(self, acceptable: float, weight: float, at_s: float, half_life_s: float) -> None:
        """Take back what ``add`` put in for a forgotten outcome (as decayed since)."""
        factor = 0.5 ** (max(0.0, self.at_s - at_s) / half_life_s)
        self.total = max(0.0, self.total - weight * factor)
        self.accepted = max(0.0, self.accepted - weight * acceptable * factor)

    def decay_to(self, now_s: float, half_life_s: float) -> None:
        if now_s > self.at_s:
            factor = 0.5 ** ((now_s - self.at_s) / half_life_s)
            self.total *= factor
            self.accepted *= factor
            self.at_s = now_s

    def at(self, now_s: float, half_life_s: float) -> tuple[float, float]:
        """(weight, rate) as of ``now_s``, without changing the sums."""
        factor = 0.5 ** (max(0.0, now_s - self.at_s) / half_life_s)
        total = self.total * factor
        return total, (self.accepted / self.total if self.total > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The nearest remembered outcomes: their similarity, tier code, acceptability, weight
    and time, as parallel arrays."""

    similarity: FloatArray
    tier: npt.NDArray[np.int16]
    acceptable: FloatArray
    weight: FloatArray
    at_s: npt.NDArray[np.float64]


@dataclass(slots=True)
class Memory:
    """At most ``capacity`` outcomes of one scope (see the module docstring)."""

    dim: int
    capacity: int
    rates: dict[int, TierRate] = field(default_factory=dict)
    size: int = 0
    next_slot: int = 0
    _graph: hnswlib.Index = field(init=False)
    _tier: npt.NDArray[np.int16] = field(init=False)
    _acceptable: FloatArray = field(init=False)
    _weight: FloatArray = field(init=False)
    _at_s: npt.NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        # Allocated whole: pages are only touched (and resident) as slots fill, and a resize
        # (a copy of the whole graph) never stalls a learning step.
        self._graph = hnswlib.Index(space="ip", dim=self.dim)
        self._graph.init_index(max_elements=self.capacity, M=_M, ef_construction=_EF_CONSTRUCTION)
        self._graph.set_num_threads(1)
        self._tier = np.zeros(self.capacity, dtype=np.int16)
        self._acceptable = np.zeros(self.capacity, dtype=np.float32)
        self._weight = np.zeros(self.capacity, dtype=np.float32)
        self._at_s = np.zeros(self.capacity, dtype=np.float64)

    def add(
        self, vectors: FloatArray, tiers: npt.NDArray[np.int16], acceptable: FloatArray,
        weights: FloatArray, at_s: npt.NDArray[np.float64], half_life_s: float, threads: int = 1,
    ) -> None:
        """Remember projected ``vectors`` with their outcomes, overwriting the oldest slots."""
        n = len(vectors)
        slots = (self.next_slot + np.arange(n)) % self.capacity
        if n > self.capacity:  # only the newest fit
            keep = slice(n - self.capacity, n)
            vectors, tiers, acceptable = vectors[keep], tiers[keep], acceptable[keep]
            weights, at_s, slots = weights[keep], at_s[keep], slots[keep]
        self._forget(slots, half_life_s)
        self._graph.add_items(vectors, slots.astype(np.int64), num_threads=threads)
        self._tier[slots] = tiers
        self._acceptable[slots] = acceptable
        self._weight[slots] = weights
        self._at_s[slots] = at_s
        for tier, ok, weight, when in zip(tiers, acceptable, weights, at_s, strict=True):
            self.rates.setdefault(int(tier), TierRate()).add(
                float(ok), float(weight), float(when), half_life_s)
        self.next_slot = int((self.next_slot + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def _forget(self, slots: npt.NDArray[np.int64], half_life_s: float) -> None:
        """Take the outcomes about to be overwritten out of their tier's rate."""
        filled = slots[slots < self.size]
        for slot in filled.tolist():
            rate = self.rates.get(int(self._tier[slot]))
            if rate is not None:
                rate.remove(float(self._acceptable[slot]), float(self._weight[slot]),
                            float(self._at_s[slot]), half_life_s)

    def nearest(self, vector: FloatArray, k: int) -> Neighbours | None:
        """The ``k`` nearest remembered outcomes to the projected ``vector`` (None: empty)."""
        k = min(k, self.size)
        if k <= 0:
            return None
        self._graph.set_ef(max(_MIN_EF, k))
        while True:
            try:
                labels, distances = self._graph.knn_query(vector, k=k)
                break
            except RuntimeError:  # the graph could not reach k entries: ask for fewer
                k //= 2
                if k == 0:
                    return None
        slots = labels[0].astype(np.intp)
        return Neighbours(
            similarity=(1.0 - distances[0]).astype(np.float32),
            tier=self._tier[slots],
            acceptable=self._acceptable[slots],
            weight=self._weight[slots],
            at_s=self._at_s[slots],
        )

    def approximate_bytes(self) -> int:
        """What the filled part of the memory takes: graph links and vectors, and the arrays."""
        # Vector, level-0 links, label, level, lock and label map entry; our four arrays.
        per_slot = self.dim * 4 + (2 * _M) * 4 + 4 + 8 + 8 + 4 + 40 + 48 + 2 + 4 + 4 + 8
        upper = 1.0 / math.log(_M)  # expected upper-layer share, each with M links
        return int(self.size * (per_slot + upper * (_M * 4 + 4)))
