"""Each tier's linear estimate over the whole embedding: ridge regression with forgetting.

``Linear`` keeps, per tier, the recency-weighted sufficient statistics of a ridge regression of
acceptability on the prompt vector (with an intercept): ``A = sum(w x x')`` and ``b = sum(w y x)``,
halved every ``half_life_s`` like the rest of the learner. Learning only appends to a pending
list (a few microseconds, on the event loop); ``refit`` folds the pending rows in and solves
``(A + ridge I) coef = b`` for every changed tier by conjugate gradients from the last fit
(a fraction of a millisecond: a few matrix-vector products, which run without the GIL; the
learner calls it in a worker thread). An estimate is one dot product with the
coefficients of the last refit, read without a lock (``refit`` swaps in a new mapping whole).

Unlike the nearest outcomes, it generalises across regions (a subject the cheap tier finds hard
shares directions with other hard subjects), and its memory is fixed: ``(d + 1)^2`` float32s per
tier and scope, whatever the number of outcomes. ``state`` and ``restore`` carry the statistics
to and from the learner's SQLite file. Touches no file itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LinearState:
    """One tier's statistics as of ``at_s``: ``a`` ((d+1) x (d+1)), ``b`` (d+1), and the
    decayed weight of the outcomes in them (``total``)."""

    tier: str
    a: FloatArray
    b: Float64Array
    total: float
    at_s: float


@dataclass(frozen=True, slots=True)
class _Fit:
    coef: Float64Array
    total: float
    at_s: float


class _Stats:
    """The statistics of one tier (mutated only under ``Linear``'s lock)."""

    __slots__ = ("a", "at_s", "b", "total")

    def __init__(self, dim: int) -> None:
        self.a = np.zeros((dim + 1, dim + 1), dtype=np.float32)
        self.b = np.zeros(dim + 1, dtype=np.float64)
        self.total = 0.0
        self.at_s = 0.0

    def decay_to(self, now_s: float, half_life_s: float) -> None:
        if now_s > self.at_s:
            factor = 0.5 ** ((now_s - self.at_s) / half_life_s)
            if factor < 1.0:
                self.a *= np.float32(factor)
                self.b *= factor
                self.total *= factor
            self.at_s = now_s


class Linear:
    """Per-tier ridge estimates of one scope (see the module docstring)."""

    def __init__(self, dim: int, ridge: float, half_life_s: float) -> None:
        self.dim = dim
        self.ridge = ridge
        self.half_life_s = half_life_s
        self._stats: dict[str, _Stats] = {}
        self._pending: list[tuple[FloatArray, str, float, float, float]] = []
        self._fits: dict[str, _Fit] = {}
        self._lock = threading.Lock()

    def add(self, vector: FloatArray, tier: str, acceptable: float, weight: float,
            at_s: float) -> None:
        """Queue one outcome for the next ``refit`` (cheap: an append)."""
        # Under the lock: ``close`` folds the last outcomes while a cancelled refit may still run
        # in its thread, and an append to the list that refit has just taken would be lost.
        with self._lock:
            self._pending.append((vector, tier, acceptable, weight, at_s))

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def refit(self) -> None:
        """Fold the pending outcomes in and solve again for the tiers they touched."""
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            touched = sorted({tier for _, tier, _, _, _ in pending})
            for tier in touched:
                self._fold(tier, [p for p in pending if p[1] == tier])
            fits = dict(self._fits)
            for tier in touched:
                fits[tier] = self._solve(tier, self._stats[tier])
            self._fits = fits

    def _fold(self, tier: str, rows: list[tuple[FloatArray, str, float, float, float]]) -> None:
        stats = self._stats.get(tier)
        if stats is None:
            stats = self._stats[tier] = _Stats(self.dim)
        newest = max(stats.at_s, max(r[4] for r in rows))
        stats.decay_to(newest, self.half_life_s)
        x = np.ones((len(rows), self.dim + 1), dtype=np.float32)
        x[:, :-1] = np.stack([r[0] for r in rows])
        y = np.array([r[2] for r in rows], dtype=np.float64)
        w = np.array([r[3] * 0.5 ** ((newest - r[4]) / self.half_life_s) for r in rows])
        stats.a += (x.T * w.astype(np.float32)) @ x
        stats.b += x.T.astype(np.float64) @ (w * y)
        stats.total += float(w.sum())

    def _solve(self, tier: str, stats: _Stats) -> _Fit:
        a = stats.a.astype(np.float64)
        # The intercept is not shrunk: with few outcomes it is their mean, not 0.
        a[np.arange(self.dim), np.arange(self.dim)] += self.ridge
        a[-1, -1] += 1e-6
        previous = self._fits.get(tier)
        start = previous.coef if previous is not None else np.zeros(self.dim + 1)
        return _Fit(conjugate_gradient(a, stats.b, start), stats.total, stats.at_s)

    def estimate(self, vector: FloatArray, tier: str, now_s: float) -> tuple[float, float]:
        """(probability, evidence): the tier's fitted acceptability for ``vector`` (clipped to
        0..1) and the decayed weight of the outcomes it rests on; (0.5, 0) before any fit."""
        fit = self._fits.get(tier)
        if fit is None:
            return 0.5, 0.0
        coef = fit.coef
        p = float(np.dot(coef[:-1], vector) + coef[-1])
        total = fit.total * 0.5 ** (max(0.0, now_s - fit.at_s) / self.half_life_s)
        return min(1.0, max(0.0, p)), total

    def state(self) -> list[LinearState]:
        """Every tier's statistics with the pending outcomes folded in (a copy)."""
        self.refit()
        with self._lock:
            return [LinearState(t, s.a.copy(), s.b.copy(), s.total, s.at_s)
                    for t, s in self._stats.items()]

    def restore(self, states: list[LinearState]) -> None:
        """Replace the statistics by ``states`` (from ``state``) and solve for them."""
        with self._lock:
            for st in states:
                if st.a.shape != (self.dim + 1, self.dim + 1):
                    continue  # another embedding size: the outcomes rebuild it instead
                stats = self._stats[st.tier] = _Stats(self.dim)
                stats.a[:], stats.b[:] = st.a, st.b
                stats.total, stats.at_s = st.total, st.at_s
            self._fits = {}
            self._fits = {t: self._solve(t, s) for t, s in self._stats.items()}

    def approximate_bytes(self) -> int:
        return len(self._stats) * ((self.dim + 1) ** 2 * 4 + (self.dim + 1) * 16)


def conjugate_gradient(a: Float64Array, b: Float64Array, start: Float64Array,
                       tolerance: float = 1e-8, max_steps: int = 500) -> Float64Array:
    """``a``'s inverse times ``b`` for a symmetric positive definite ``a``, by conjugate
    gradients with a diagonal preconditioner, from ``start`` (the last fit: a few outcomes
    later it is a few steps away). A dense solve costs O(d^3) and OpenBLAS spreads it over
    threads that a busy machine does not have; each step here is one matrix-vector product."""
    diagonal = np.diag(a).copy()
    x = start.copy()
    r = b - a @ x
    z = r / diagonal
    p = z.copy()
    rz = float(r @ z)
    limit = tolerance * float(np.sqrt(b @ b))
    for _ in range(max_steps):
        if float(np.sqrt(r @ r)) <= limit:
            break
        ap = a @ p
        step = rz / float(p @ ap)
        x += step * p
        r -= step * ap
        z = r / diagonal
        rz, previous = float(r @ z), rz
        p = z + (rz / previous) * p
    return x
