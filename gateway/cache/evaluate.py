"""Measuring the cache on labelled pairs, through the code path that serves requests.

For each pair ``{text_a, text_b, label}`` an answer is stored under ``text_a`` and ``text_b`` is
looked up, in a real ``SemanticCache`` (SQLite file, hnswlib graph, guards) in a scratch
directory; every pair gets its own namespace so pairs cannot answer each other. A hit on a label-0
pair is a false hit. Lookups run once at a low floor threshold; each outcome keeps its score, so
the hit/false-hit curve at any threshold above the floor follows without running again (each
namespace holds one entry, so a higher threshold can only drop a hit, never change it). A
semantic hit's score is what the cache's serving rule (``rule.Rule.judge``) compared with its
threshold: with the learned verifier (``verifier``, when it applies to the model), its
probability that the pair asks the same question; otherwise the cosine minus the margin the
guards charged it. So the curve is that of the rule the cache applies. Each outcome also keeps
the cosine and the guards' verdict (its soft differences, or why it was refused) so that
``calibration.fit_margins`` can refit the cosine rule's margins.

Touches only the scratch directory it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gateway.cache.fingerprint import normalize_text
from gateway.cache.guards import compare
from gateway.cache.index import FloatArray, VectorSpace
from gateway.cache.semantic_cache import SemanticCache
from gateway.core.cache_settings import CacheSettings

Embed = Callable[[Sequence[str]], FloatArray]
FLOOR = 0.5
_CHUNK = 500
_CONTEXT = "evaluation"
_ANSWER = {
    "id": "chatcmpl-eval", "object": "chat.completion", "created": 0, "model": "eval",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "stored answer"},
                 "finish_reason": "stop"}],
}


@dataclass(frozen=True, slots=True)
class Pair:
    text_a: str
    text_b: str
    label: int
    group: str = ""  # a style or a kind of change, when the file names one


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the cache did for one pair: ``kind`` None for a miss; ``score`` a semantic hit's
    cosine minus its margin (1.0 for an exact hit). ``cosine``, ``differences`` (the guards'
    soft differences, counted by kind) and ``reason`` (why the guards refused, or "") describe
    the pair whether or not it hit."""

    label: int
    kind: str | None
    score: float
    cosine: float = 0.0
    differences: tuple[tuple[str, int], ...] = ()
    reason: str = ""

    def hit(self, threshold: float) -> bool:
        return self.kind == "exact" or (self.kind == "semantic" and self.score >= threshold)


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    precision: float
    hit_rate: float  # share of duplicates (label 1) served from the cache
    false_hit_rate: float  # share of non-duplicates (label 0) served, wrongly
    hits: int
    false_hits: int


def by_group(pairs: Sequence[Pair], outcomes: Sequence[Outcome],
             threshold: float) -> list[tuple[str, int, int, int]]:
    """Per group, at ``threshold``: (group, label, pairs, served), groups in file order."""
    counts: dict[tuple[str, int], list[int]] = {}
    for pair, outcome in zip(pairs, outcomes, strict=True):
        if pair.group:
            seen = counts.setdefault((pair.group, pair.label), [0, 0])
            seen[0] += 1
            seen[1] += outcome.hit(threshold)
    return [(group, label, n, served) for (group, label), (n, served) in counts.items()]


def load_pairs(path: Path) -> list[Pair]:
    """Pairs from a JSON list of ``{text_a, text_b, label}``; raises ValueError naming the item."""
    raw = json.loads(path.read_text("utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of pairs")
    pairs = []
    for i, item in enumerate(raw):
        try:
            pairs.append(Pair(str(item["text_a"]), str(item["text_b"]), int(item["label"]),
                              str(item.get("group", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}[{i}]: expected text_a, text_b and label ({exc})") from exc
    return pairs


async def run_pairs(pairs: Sequence[Pair], embed: Embed, space: VectorSpace,
                    workdir: Path, *, guards: bool = True,
                    verifier: Path | None = None) -> list[Outcome]:
    """Store ``text_a``, look up ``text_b``, for every pair; in chunks of fresh caches. The
    cache serves by ``verifier`` (a weights file) when it applies to ``space``, else by cosine
    and margin."""
    outcomes: list[Outcome] = []
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        settings = _settings(workdir / f"chunk-{start}", guards, verifier)
        outcomes.extend(await _run_chunk(chunk, embed, space, settings))
    return outcomes


def _settings(directory: Path, guards: bool, verifier: Path | None) -> CacheSettings:
    return replace(
        CacheSettings(), database=directory / "cache.sqlite3", index_dir=directory / "index",
        threshold=FLOOR, guards=guards, verifier=verifier, verifier_threshold=0.0, ttl_s=0.0,
        max_entries=10 * _CHUNK, max_pending=10 * _CHUNK, candidates=1,
    )


async def _run_chunk(chunk: Sequence[Pair], embed: Embed, space: VectorSpace,
                     settings: CacheSettings) -> list[Outcome]:
    cache = await SemanticCache.open(settings, space)
    try:
        # as a request is (``pipeline.caching``): the text as sent, the vector of its folded text
        sent_a = [normalize_text(p.text_a) for p in chunk]
        sent_b = [normalize_text(p.text_b) for p in chunk]
        keys_a, keys_b = [cache.key_text(t) for t in sent_a], [cache.key_text(t) for t in sent_b]
        vectors = embed([*keys_a, *keys_b])
        for i, text in enumerate(sent_a):
            await cache.store(f"pair:{i}", _CONTEXT, text, vectors[i], _ANSWER)
        await cache.flush()
        await cache.typo_keys_made()  # as a running gateway would have them
        outcomes = []
        for i, (pair, text) in enumerate(zip(chunk, sent_b, strict=True)):
            hit = await cache.lookup(f"pair:{i}", _CONTEXT, text, vectors[len(chunk) + i],
                                     "semantic")
            cosine = _cosine(vectors[i], vectors[len(chunk) + i])
            verdict = compare(keys_a[i], keys_b[i]) if settings.guards else None
            score = hit.score if hit else 0.0
            if hit and hit.kind == "semantic":  # what the rule compared with its threshold
                score = cache.rule.judge(keys_a[i], keys_b[i], hit.score).score
            outcomes.append(Outcome(
                pair.label, hit.kind if hit else None, score, cosine,
                verdict.differences if verdict and verdict.ok else (),
                verdict.reason if verdict and not verdict.ok else "",
            ))
    finally:
        await cache.close()
    return outcomes


def _cosine(a: FloatArray, b: FloatArray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0


def point(outcomes: Sequence[Outcome], threshold: float) -> Point:
    duplicates = sum(1 for o in outcomes if o.label == 1)
    others = len(outcomes) - duplicates
    hits = sum(1 for o in outcomes if o.label == 1 and o.hit(threshold))
    false_hits = sum(1 for o in outcomes if o.label != 1 and o.hit(threshold))
    served = hits + false_hits
    return Point(
        threshold=threshold,
        precision=hits / served if served else 1.0,
        hit_rate=hits / duplicates if duplicates else 0.0,
        false_hit_rate=false_hits / others if others else 0.0,
        hits=hits,
        false_hits=false_hits,
    )


def ceiling(outcomes: Sequence[Outcome]) -> Point | None:
    """The highest hit rate any single threshold reaches with no false hit: the threshold just
    above the best-scored non-duplicate (what the scores themselves can tell apart). None when
    a non-duplicate is an exact hit (no threshold refuses it) or there are no duplicates."""
    if any(o.label != 1 and o.kind == "exact" for o in outcomes) \
            or not any(o.label == 1 for o in outcomes):
        return None
    false_scores = [o.score for o in outcomes if o.label != 1 and o.kind == "semantic"]
    threshold = round(max(false_scores) + 1e-4, 4) if false_scores else FLOOR
    return point(outcomes, threshold)


def curve(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[Point]:
    return [point(outcomes, t) for t in thresholds]


def default_thresholds() -> list[float]:
    return [round(float(t), 3) for t in np.arange(0.80, 1.0001, 0.01)]


def split(pairs: Sequence[Pair], holdout: float, seed: int = 5) -> tuple[list[Pair], list[Pair]]:
    """A seeded split into (tune, held out); ``holdout`` is the held-out share."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    cut = round(len(pairs) * (1.0 - holdout))
    return [pairs[i] for i in order[:cut]], [pairs[i] for i in order[cut:]]
