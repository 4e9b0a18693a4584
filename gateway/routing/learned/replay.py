"""Replaying labelled prompts through the learner and the learned policy, and scoring them.

A labelled line is ``{"text": ..., "outcomes": {"cheap": true, "reasoning": false}}`` (and an
optional ``"group"``, e.g. the MMLU subject): whether each tier's answer to the prompt was right.

``replay`` is the online measure (``gateway learn replay``): prompts arrive in order, starting
cold; the ``LearnedPolicy`` decides each one from the intent decision and what it has learned;
the served tier's outcome comes back as a signal with probability ``feedback_rate``, and a
failure that comes back escalates to the next tier (both calls paid), whose outcome then comes
back with the same probability, marked as observed after an escalation (as the gateway marks an
escalated answer's). Each outcome carries the estimate its tier was chosen with (the decision's
``decided``), as the gateway's outcome feed does, which is what ``Learner.bias`` measures.
Quality is the share of prompts finally answered right, relative to always calling the
strongest tier on the same prompts; cost is relative to that too.

``evaluate`` is the offline measure (``gateway learn eval``): learn every outcome of a training
set, then rank the test prompts by the policy's own criterion (the cheap tier's estimate over
the strong tier's, or its shortfall with ``relative_to = "gain"``: the policy keeps the cheap
tier when it reaches ``quality_target`` of it) and
sweep the share sent to the strong tier, RouteLLM's way: the share needed for 95% of the strong
tier's quality, CPT(50%) and CPT(80%) (the share that closes that much of the gap between the
tiers) and APGR (the area under the quality curve above the weak tier's, over the gap's).
Pure computation on vectors it is given; touches nothing.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.core.routing_settings import TierPlan
from gateway.core.toml_table import ConfigError, read_text, text_lines
from gateway.routing.learned.learner import Learner, Outcome, Prior, Source
from gateway.routing.learned.policy import LearnedPolicy, flip_target, lower_bound
from gateway.routing.policy import Decision

FloatArray = npt.NDArray[np.float32]
CURVE_POINTS = 10
TIME_STEP_S = 1.0  # one prompt a second: only the order matters under a days-long half-life
QUALITY_95 = 0.95  # "95% of always-reasoning quality", the figure every share is read at


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    outcomes: Mapping[str, bool]
    group: str | None = None


def read_labelled(path: Path) -> list[Labelled]:
    """The labelled lines of ``path``; a bad line is a ``ConfigError`` naming it."""
    items = []
    for n, line in enumerate(text_lines(read_text(path)), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, outcomes = row["text"], row["outcomes"]
            group = row.get("group")
            ok = (isinstance(text, str) and text.strip() and isinstance(outcomes, dict)
                  and outcomes and all(isinstance(v, bool) for v in outcomes.values())
                  and (group is None or isinstance(group, str)))
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{path}:{n}: expected {{\"text\": ..., \"outcomes\": {{tier: true|false}}}}"
            )
        items.append(Labelled(text, dict(outcomes), group))
    if not items:
        raise ConfigError(f"{path}: no labelled lines")
    return items


def data_tiers(items: Sequence[Labelled], plan: TierPlan) -> tuple[str, ...]:
    """The tiers every line labels, cheapest first by ``plan``; an error unless two or more
    of them are tiers the plan orders."""
    common = set(items[0].outcomes)
    for item in items[1:]:
        common &= set(item.outcomes)
    tiers = tuple(sorted((t for t in common if t in plan.order), key=plan.rank))
    if len(tiers) < 2:
        raise ConfigError(
            f"the data must label two or more served tiers on every line (served: "
            f"{', '.join(plan.order)}; labelled on every line: {', '.join(sorted(common))})"
        )
    return tiers


@dataclass(frozen=True, slots=True)
class Window:
    """Measures over a run of prompts: the strongest tier's share of prompts (called directly
    or by escalation), quality and cost relative to always calling the strongest tier."""

    start: int
    end: int
    strong_share: float
    quality: float
    cost: float
    escalations: int


@dataclass(frozen=True, slots=True)
class ReplayReport:
    prompts: int
    feedback_rate: float
    seed: int
    whole: Window
    second_half: Window
    curve: tuple[Window, ...]
    always_cheap_quality: float


@dataclass(frozen=True, slots=True)
class _Served:
    strong: bool
    right: bool
    cost: float
    escalated: bool


def replay(
    items: Sequence[Labelled], vectors: FloatArray, policy: LearnedPolicy,
    intent: Callable[[FloatArray], Decision], *, feedback_rate: float, seed: int,
    costs: Mapping[str, float], tenant: str | None = None,
) -> ReplayReport:
    """Stream ``items`` through ``policy`` in order (see the module docstring).

    ``intent`` is the intent routes' decision for a vector (the prior); the policy's learner
    must be empty and its clock is driven here (one prompt a second).
    """
    learner, rng = policy.learner, random.Random(seed)
    tiers = data_tiers(items, policy.plan)
    clock = _Clock()
    learner.clock = clock
    served = []
    for i, (item, vector) in enumerate(zip(items, vectors, strict=True)):
        clock.now_s = i * TIME_STEP_S
        decision = policy.refine(intent(vector), vector, tenant)
        decided = dict(decision.learned.decided) if decision.learned is not None else {}
        served.append(_serve(item, vector, (decision.tier, decided), tiers, policy.plan,
                             learner, rng, feedback_rate, clock.now_s, costs, tenant))
    return _report(items, served, tiers, costs, feedback_rate, seed)


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _serve(
    item: Labelled, vector: FloatArray, chosen: tuple[str, Mapping[str, float]],
    tiers: tuple[str, ...], plan: TierPlan, learner: Learner, rng: random.Random,
    feedback_rate: float, now_s: float, costs: Mapping[str, float], tenant: str | None,
) -> _Served:
    """One prompt served from the chosen tier up (with the estimates it was chosen with),
    escalating while a failure comes back."""
    tier, decided = chosen
    if tier not in tiers:  # a tier the data does not label: the cheapest labelled one answers
        tier, decided = tiers[0], {}  # in its place, which no estimate chose
    cost, escalated = 0.0, False
    while True:
        cost += costs[tier]
        right = item.outcomes[tier]
        if rng.random() >= feedback_rate:
            break
        learner.learn([Outcome(vector, tier, 1.0 if right else 0.0, 1.0, now_s, tenant,
                               Source.REPLAY, escalated, decided.get(tier))])
        following = plan.next(tier)
        if right or following is None or following not in tiers:
            break
        tier, escalated = following, True
    return _Served(tier == tiers[-1], right, cost, escalated)


def _window(
    items: Sequence[Labelled], served: Sequence[_Served], start: int, end: int,
    tiers: tuple[str, ...], costs: Mapping[str, float],
) -> Window:
    part, labels = served[start:end], items[start:end]
    strong = sum(item.outcomes[tiers[-1]] for item in labels)
    n = max(1, len(part))
    return Window(
        start=start, end=end,
        strong_share=sum(s.strong for s in part) / n,
        quality=sum(s.right for s in part) / strong if strong else 1.0,
        cost=sum(s.cost for s in part) / (n * costs[tiers[-1]]) if costs[tiers[-1]] else 0.0,
        escalations=sum(s.escalated for s in part),
    )


def _report(
    items: Sequence[Labelled], served: Sequence[_Served], tiers: tuple[str, ...],
    costs: Mapping[str, float], feedback_rate: float, seed: int,
) -> ReplayReport:
    n = len(items)
    bounds = [round(i * n / CURVE_POINTS) for i in range(CURVE_POINTS + 1)]
    strong = sum(item.outcomes[tiers[-1]] for item in items)
    cheap = sum(item.outcomes[tiers[0]] for item in items)
    return ReplayReport(
        prompts=n, feedback_rate=feedback_rate, seed=seed,
        whole=_window(items, served, 0, n, tiers, costs),
        second_half=_window(items, served, n // 2, n, tiers, costs),
        curve=tuple(_window(items, served, a, b, tiers, costs)
                    for a, b in itertools.pairwise(bounds) if b > a),
        always_cheap_quality=cheap / strong if strong else 1.0,
    )


# -- offline evaluation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalReport:
    """RouteLLM's measures on the test set; shares are fractions of the test prompts."""

    train: int
    test: int
    weak_accuracy: float
    strong_accuracy: float
    share_for_95: float
    cpt50: float
    cpt80: float
    apgr: float
    target_for_95: float
    random_share_for_95: float
    group_oracle_share_for_95: float | None
    curve: tuple[tuple[float, float], ...]


def learn_all(learner: Learner, items: Sequence[Labelled], vectors: FloatArray,
              tiers: Sequence[str]) -> None:
    """Every labelled outcome of ``items`` (each tier's) into ``learner``, all at time 0."""
    learner.learn(
        Outcome(vector, tier, 1.0 if item.outcomes[tier] else 0.0, 1.0, 0.0, None,
                Source.REPLAY)
        for item, vector in zip(items, vectors, strict=True) for tier in tiers
    )


def cheap_ratio(learner: Learner, vectors: FloatArray, tiers: tuple[str, str],
                priors: Sequence[Prior] | None = None) -> FloatArray:
    """The policy's criterion per prompt, as the quality target at which it would flip: the
    cheap tier's estimate (lowered by the settings' ``margin``, as the policy does) over the
    strong tier's (or the prior's, ``relative_to``), or with ``gain`` one less the cheap tier's
    shortfall below the strong one in units of the prior's acceptability. ``priors``: each
    prompt's prior (default: none, as offline, where every outcome is known)."""
    s = learner.settings
    out = np.empty(len(vectors), dtype=np.float32)
    for i, vector in enumerate(vectors):
        e = learner.estimate(vector, tiers, prior=None if priors is None else priors[i])
        cheap = lower_bound(e[tiers[0]], s.margin, s.prior_weight)
        out[i] = flip_target(cheap, e[tiers[1]].p, s.relative_to)
    return out


def evaluate(
    train: Sequence[Labelled], train_vectors: FloatArray, test: Sequence[Labelled],
    test_vectors: FloatArray, learner: Learner, plan: TierPlan,
) -> EvalReport:
    """Learn ``train`` into ``learner`` (empty; its clock is stopped at 0 here), score ``test``
    (see the module docstring)."""
    tiers = data_tiers(train, plan)
    pair = (data_tiers(test, plan)[0], tiers[-1])
    learner.clock = _Clock()  # every outcome is as fresh as the test: no decay offline
    learn_all(learner, train, train_vectors, tiers)
    ratio = cheap_ratio(learner, test_vectors, pair)
    weak = np.array([i.outcomes[pair[0]] for i in test], dtype=np.float64)
    strong = np.array([i.outcomes[pair[1]] for i in test], dtype=np.float64)
    curve = quality_curve(ratio, weak, strong)
    w, s = float(weak.mean()), float(strong.mean())
    share95 = share_reaching(curve, QUALITY_95 * s)
    return EvalReport(
        train=len(train), test=len(test), weak_accuracy=w, strong_accuracy=s,
        share_for_95=share95,
        cpt50=share_reaching(curve, w + 0.5 * (s - w)),
        cpt80=share_reaching(curve, w + 0.8 * (s - w)),
        apgr=apgr(curve, w, s),
        target_for_95=_target_at(ratio, share95),
        random_share_for_95=random_share(w, s),
        group_oracle_share_for_95=_group_oracle(test, weak, strong),
        curve=tuple((float(x), float(y)) for x, y in curve[:: max(1, len(curve) // 20)]),
    )


def quality_curve(score: FloatArray, weak: npt.NDArray[np.float64],
                  strong: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(share sent to the strong tier, quality) for every cut: the lowest scores go first."""
    order = np.argsort(score, kind="stable")
    gain = (strong - weak)[order]
    n = len(score)
    quality = weak.sum() + np.concatenate([[0.0], np.cumsum(gain)])
    return np.stack([np.arange(n + 1) / n, quality / n], axis=1)


def share_for_95(score: FloatArray, weak: npt.NDArray[np.float64],
                 strong: npt.NDArray[np.float64]) -> float:
    """The share ranking by ``score`` sends to the strong tier for 95% of its quality."""
    return share_reaching(quality_curve(score, weak, strong), QUALITY_95 * float(strong.mean()))


def random_share(weak: float, strong: float) -> float:
    """The share a router that ranks nothing sends to the strong tier for 95% of its quality
    (``weak`` and ``strong``: the tiers' accuracies)."""
    return _clip((QUALITY_95 * strong - weak) / (strong - weak)) if strong > weak else 0.0


def share_reaching(curve: npt.NDArray[np.float64], quality: float) -> float:
    """The smallest share at which the curve reaches ``quality`` (interpolated); 1 if never."""
    hits = np.nonzero(curve[:, 1] >= quality - 1e-12)[0]
    if len(hits) == 0:
        return 1.0
    i = int(hits[0])
    if i == 0:
        return 0.0
    (x0, y0), (x1, y1) = curve[i - 1], curve[i]
    return float(x0 + (x1 - x0) * (quality - y0) / (y1 - y0)) if y1 > y0 else float(x1)


def apgr(curve: npt.NDArray[np.float64], weak: float, strong: float) -> float:
    """RouteLLM's average performance gap recovered: area above the weak tier over the gap."""
    if strong <= weak:
        return 0.0
    x, y = curve[:, 0], curve[:, 1]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    span = float(x[-1] - x[0])
    return (area - weak * span) / ((strong - weak) * span)


def _target_at(ratio: FloatArray, share: float) -> float:
    """The quality target that sends ``share`` of these prompts to the strong tier."""
    if share <= 0:
        return float(ratio.min())
    return float(np.quantile(ratio, min(1.0, share)))


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _group_oracle(test: Sequence[Labelled], weak: npt.NDArray[np.float64],
                  strong: npt.NDArray[np.float64]) -> float | None:
    """The share for 95% when whole groups go to the strong tier, largest gain first: what a
    router that knew each group's (subject's) gain would need. None without two groups."""
    groups = [i.group for i in test]
    if any(g is None for g in groups) or len(set(groups)) < 2:
        return None
    names = sorted(set(groups), key=str)
    index = {g: n for n, g in enumerate(names)}
    codes = np.array([index[g] for g in groups])
    gain = np.array([(strong - weak)[codes == n].mean() for n in range(len(names))])
    return share_for_95(-gain[codes].astype(np.float32), weak, strong)
