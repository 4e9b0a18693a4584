"""The serving rule: whether a semantic candidate, at its cosine, is served for the asked text.

Two rules share one shape (``Rule.judge`` returns the guards' ``Verdict`` with the ``score`` it
compared):

- **verifier** (when a ``verifier.Verifier`` is given and applies to the vector space): the
  candidate's cosine must reach the verifier's ``min_cosine``, the hard guards must pass, and
  the verifier's probability that the two texts ask the same question must reach
  ``verifier_threshold``;
- **cosine and margin** (otherwise): the hard guards must pass and ``cosine - margin`` (what the
  soft differences cost) must reach ``threshold``; with ``guards`` off, the cosine alone.

``floor`` is the lowest cosine a candidate can be served at, so a lookup stops at the first
neighbour below it. ``serving_rule(settings, space)`` builds the rule a cache applies: it reads
the configured verifier file (the only disk access here) and keeps it only when it was trained
on the cache's embedding model, saying so in the log when it is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from gateway.cache.guards import Verdict, compare
from gateway.cache.index import VectorSpace
from gateway.cache.text_features import Profile, profile
from gateway.cache.verifier import Verifier, features, load, model_name
from gateway.core.cache_settings import CacheSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    threshold: float  # cosine - margin, for the cosine rule
    guards: bool = True
    verifier: Verifier | None = None  # only one that applies to the cache's vectors
    verifier_threshold: float = 0.5  # probability, for the verifier rule

    @property
    def name(self) -> str:
        return "verifier" if self.uses_verifier else "cosine"

    @property
    def uses_verifier(self) -> bool:
        return self.verifier is not None and self.guards

    @property
    def floor(self) -> float:
        """The lowest cosine at which a candidate may be served."""
        return self.verifier.min_cosine if self.verifier is not None and self.guards \
            else self.threshold

    def judge(self, stored: str | Profile, asked: str | Profile, cosine: float) -> Verdict:
        if cosine < self.floor:
            return Verdict(False, f"score {cosine:.4f} below {self.floor:.4f}", score=cosine)
        if not self.guards:
            return Verdict(True, score=cosine)
        ps = stored if isinstance(stored, Profile) else profile(stored)
        pa = asked if isinstance(asked, Profile) else profile(asked)
        verdict = compare(ps, pa)
        if not verdict.ok:
            return verdict
        if self.verifier is not None:
            p = round(self.verifier.probability(features(ps, pa, verdict, cosine)), 6)
            if p < self.verifier_threshold:
                return Verdict(False, f"verifier {p:.4f} below {self.verifier_threshold:.4f} "
                                      f"({verdict.reason})", score=p)
            return replace(verdict, score=p)
        score = round(cosine - verdict.margin, 6)
        if score < self.threshold:
            return Verdict(False, f"score {cosine:.4f} - margin {verdict.margin:.4f} below "
                                  f"{self.threshold:.4f} ({verdict.reason})", score=score)
        return replace(verdict, score=score)


def accept(stored: str | Profile, asked: str | Profile, score: float, threshold: float,
           guards: bool = True) -> Verdict:
    """The cosine-and-margin rule: served when the guards pass and ``score - margin`` (the cost
    of the soft differences) is at least ``threshold``."""
    return Rule(threshold, guards).judge(stored, asked, score)


def serving_rule(settings: CacheSettings, space: VectorSpace | None) -> Rule:
    """The rule a cache with ``settings`` and vectors of ``space`` serves by."""
    verifier = None
    if settings.verifier is not None and settings.guards and space is not None:
        try:
            verifier = load(settings.verifier)
        except ValueError as exc:
            log.warning("cache verifier not used, serving by cosine and margin: %s", exc)
        if verifier is not None and not verifier.applies_to(space):
            log.warning(
                "cache verifier %s was trained on %s/%d, the embedding model is %s/%d: not "
                "used; semantic hits are served by cosine and margin (threshold %.3f)",
                settings.verifier, verifier.model, verifier.dim, model_name(space), space.dim,
                settings.threshold)
            verifier = None
    threshold = settings.verifier_threshold
    if verifier is not None and threshold is None:
        threshold = verifier.threshold
    return Rule(settings.threshold, settings.guards, verifier,
                0.5 if threshold is None else threshold)


def describe(rule: Rule, settings: CacheSettings) -> str:
    """The rule a cache serves by, for its start-up log line."""
    if rule.uses_verifier:
        return (f"verifier {settings.verifier}, threshold {rule.verifier_threshold:.3f}, "
                f"cosine from {rule.floor:.3f}")
    return f"threshold {settings.threshold:.3f} from {settings.threshold_source}"
