"""Scores every route for one prompt vector: a linear head plus nearest example utterances.

Each route's score is ``similarity + blend * log p``: ``similarity`` is the mean cosine of the
prompt to the route's ``k`` closest utterances, ``p`` the probability a multinomial logistic
regression head (trained on the utterance vectors) gives the route. The head is cheap (one
``[routes, dim]`` product), so it also shortlists: similarities are computed only for its top
``shortlist`` routes, which keeps a decision well under a millisecond with 15,000 utterances.

The head is trained in numpy (Adam, cosine-decayed, fixed seed) when routes load, and cached on
disk keyed by the model, the routes and their utterances, so a restart does not train again.
Touches only the cache directory it is given.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Array = npt.NDArray[Any]

HEAD_VERSION = "lr1"
KNN_K = 3
SHORTLIST = 5


@dataclass(frozen=True, slots=True)
class HeadOptions:
    """Training of the linear head; the defaults were tuned on a split of CLINC150 train."""

    l2: float = 3e-4
    epochs: int = 15
    min_steps: int = 1500
    batch: int = 128
    learning_rate: float = 0.05
    input_scale: float = 10.0
    seed: int = 0

    def tag(self) -> str:
        return (f"{HEAD_VERSION}:{self.l2}:{self.epochs}:{self.min_steps}:{self.batch}:"
                f"{self.learning_rate}:{self.input_scale}:{self.seed}")


@dataclass(frozen=True, slots=True)
class LinearHead:
    """Logits ``weights @ v + bias``, one row per route."""

    weights: FloatArray
    bias: FloatArray


@dataclass(frozen=True, slots=True)
class Scores:
    """The shortlisted routes for one prompt, best first (indices into the route list)."""

    routes: IntArray
    scores: FloatArray
    similarity: FloatArray
    log_prob: FloatArray


def _softmax_rows(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    e: Array = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


class _Adam:
    """Adam over a list of arrays, updated in place."""

    def __init__(self, params: Sequence[Array]) -> None:
        self.params = params
        self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self.t = 0

    def step(self, grads: Sequence[Array], lr: float) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for p, g, (m, v) in zip(self.params, grads, self.moments, strict=True):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)


def train_head(
    vectors: FloatArray, labels: IntArray, n_routes: int, options: HeadOptions | None = None
) -> LinearHead:
    """Fit multinomial logistic regression (L2-regularised) on utterance vectors."""
    o = options or HeadOptions()
    n, dim = vectors.shape
    weights = np.zeros((n_routes, dim), dtype=np.float32)
    bias = np.zeros(n_routes, dtype=np.float32)
    if n_routes < 2 or n == 0:
        return LinearHead(weights, bias)
    rng = np.random.default_rng(o.seed)
    targets = np.eye(n_routes, dtype=np.float32)[labels]
    x = vectors * np.float32(o.input_scale)
    per_epoch = math.ceil(n / o.batch)
    epochs = max(o.epochs, math.ceil(o.min_steps / per_epoch))
    total, adam = epochs * per_epoch, _Adam([weights, bias])
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, o.batch):
            idx = order[start : start + o.batch]
            xb = x[idx]
            grad = (_softmax_rows(xb @ weights.T + bias) - targets[idx]) / len(idx)
            lr = o.learning_rate * 0.5 * (1 + math.cos(math.pi * adam.t / total))
            adam.step([grad.T @ xb + o.l2 * weights, grad.sum(axis=0)], lr)
    return LinearHead(weights * np.float32(o.input_scale), bias)


def head_key(model: str, route_utterances: Sequence[tuple[str, Sequence[str]]],
             options: HeadOptions) -> str:
    """The cache key of a head: the model, the training options, every route and utterance."""
    digest = hashlib.sha256(f"{model}\0{options.tag()}".encode())
    for name, utterances in route_utterances:
        digest.update(b"\1" + name.encode())
        for text in utterances:
            digest.update(b"\0" + text.encode())
    return digest.hexdigest()


def load_or_train_head(
    cache_dir: Path | None, key: str, vectors: FloatArray, labels: IntArray, n_routes: int,
    options: HeadOptions | None = None,
) -> LinearHead:
    """The head cached under ``key`` in ``cache_dir``, or a freshly trained (and saved) one."""
    path = cache_dir / f"head-{key[:32]}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                head = LinearHead(np.asarray(data["weights"], np.float32),
                                  np.asarray(data["bias"], np.float32))
            if head.weights.shape == (n_routes, vectors.shape[1]):
                return head
        except (OSError, KeyError, ValueError) as exc:
            log.warning("retraining: unreadable head cache %s: %s", path, exc)
    log.info("training the routing head on %d utterances, %d routes", len(labels), n_routes)
    head = train_head(vectors, labels, n_routes, options)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, weights=head.weights, bias=head.bias)
        os.replace(tmp, path)
    return head


class RouteClassifier:
    """Route scores for prompt vectors; built once per routes file, read-only afterwards."""

    def __init__(
        self, vectors: FloatArray, labels: IntArray, head: LinearHead, *,
        knn_k: int = KNN_K, shortlist: int = SHORTLIST,
    ) -> None:
        n_routes = head.weights.shape[0]
        blocks = [vectors[labels == r] for r in range(n_routes)]
        if any(len(b) == 0 for b in blocks):
            raise ValueError("every route needs at least one utterance vector")
        # A route with fewer than k utterances repeats them, so every mean is over k values.
        blocks = [np.resize(b, (max(len(b), knn_k), b.shape[1])) for b in blocks]
        self._vectors = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
        bounds = np.cumsum([0] + [len(b) for b in blocks])
        # Views, not copies: one contiguous matrix, one block of rows per route.
        self._blocks = [self._vectors[bounds[i] : bounds[i + 1]] for i in range(n_routes)]
        self._width = max(len(b) for b in blocks)
        self._k = knn_k
        self._weights = np.ascontiguousarray(head.weights, dtype=np.float32)
        self._bias = np.ascontiguousarray(head.bias, dtype=np.float32)
        self._shortlist = min(shortlist, n_routes)
        self.n_routes = n_routes
        self.dim = int(vectors.shape[1])
        self._utterances = len(labels)

    @property
    def utterances(self) -> int:
        return self._utterances

    def score(self, vector: FloatArray, blend: float) -> Scores:
        """The shortlisted routes for ``vector`` (L2-normalised, [dim]), best score first."""
        logits = self._weights @ vector + self._bias
        top = float(logits.max())
        log_norm = top + math.log(float(np.exp(logits - top).sum()))
        if self._shortlist < self.n_routes:
            cand = np.argpartition(logits, -self._shortlist)[-self._shortlist :]
        else:
            cand = np.arange(self.n_routes)
        # One row per candidate, padded with -inf: a single partition finds every top k.
        table = np.full((len(cand), self._width), -np.inf, dtype=np.float32)
        for j, r in enumerate(cand.tolist()):
            block = self._blocks[r]
            np.dot(block, vector, out=table[j, : len(block)])
        # sum / k is what ``mean`` computes, without its Python wrapper (this runs per request).
        sims = np.add.reduce(np.partition(table, -self._k, axis=1)[:, -self._k :], axis=1)
        sims /= np.float32(self._k)
        log_prob = (logits[cand] - log_norm).astype(np.float32, copy=False)
        scores = sims + np.float32(blend) * log_prob
        order = np.argsort(-scores, kind="stable")
        return Scores(cand[order].astype(np.int64, copy=False), scores[order], sims[order],
                      log_prob[order])
