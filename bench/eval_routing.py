"""Intent-routing accuracy on CLINC150 and BANKING77, tuned on train and measured once on val.

    python bench/clinc_to_jsonl.py                  # once: the labelled JSON lines in bench/out
    python bench/eval_routing.py [--split val|dev] [--json]

CLINC150, every train utterance: routes are built from all 15,000 train utterances; the
calibration is cross-fitted (5 folds of train: routes from four, scores on the fifth and on a
fifth of train's out-of-scope prompts), then the router is measured on val. With 10 per intent:
routes from 10 train utterances per intent (three seeds), calibration from 20 other train
utterances per intent plus train's out-of-scope prompts. ``--split dev`` measures on a held-out
fold of train instead of val (for tuning). BANKING77: routes from ``banking77_train``, fitted on
``banking77_fit``, measured on ``banking77_test``. The baseline is the plain nearest-neighbour
router (mean cosine of each route's 3 closest utterances). Vectors are cached in
``bench/out/vectors.npz``; heads in ``bench/out/heads``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder_worker.model import ModelConfig, OnnxEmbedder  # noqa: E402
from gateway.core.routing_settings import TierPlan  # noqa: E402
from gateway.routing.calibrate import (  # noqa: E402
    EvalReport,
    FitOptions,
    Scored,
    evaluate,
    fit_calibration,
    route_indices,
    score_examples,
)
from gateway.routing.classifier import FloatArray, IntArray  # noqa: E402
from gateway.routing.cli import routes_from_examples  # noqa: E402
from gateway.routing.router import Router, build_router, utterance_table  # noqa: E402
from gateway.routing.routes import Calibration, RouteSet  # noqa: E402
from gateway.routing.vectors import VectorCache, embed_cached  # noqa: E402

OUT = ROOT / "bench" / "out"
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
PLAN = TierPlan(("cheap",), "cheap")
Example = tuple[str, str | None]


class Vectors:
    """Dataset vectors through the on-disk cache; the model loads only on a miss."""

    def __init__(self) -> None:
        self.model = ModelConfig.load(MODEL_DIR).name
        self.cache = VectorCache.load(OUT / "vectors.npz", self.model)
        self._embedder: OnnxEmbedder | None = None

    async def _embed(self, texts: Sequence[str]) -> FloatArray:
        if self._embedder is None:
            self._embedder = OnnxEmbedder(MODEL_DIR)
        return self._embedder.embed(list(texts))

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        return asyncio.run(embed_cached(texts, self.cache, self._embed))


def read(name: str) -> list[Example]:
    path = OUT / f"{name}.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python bench/clinc_to_jsonl.py` first")
    return [(r["text"], r["route"]) for r in map(json.loads, path.read_text().splitlines())]


def folds(examples: Sequence[Example], k: int, seed: int = 0) -> list[list[Example]]:
    """``k`` parts, each route (and out-of-scope) spread evenly over them."""
    rng = random.Random(seed)
    by_route: dict[str | None, list[Example]] = {}
    for e in examples:
        by_route.setdefault(e[1], []).append(e)
    parts: list[list[Example]] = [[] for _ in range(k)]
    for route in sorted(by_route, key=str):
        items = by_route[route][:]
        rng.shuffle(items)
        for i, e in enumerate(items):
            parts[i % k].append(e)
    return parts


def make_routes(
    examples: Sequence[Example], per_route: int | None = None, seed: int = 0
) -> RouteSet:
    ordered = sorted(examples, key=lambda e: str(e[1]))
    return routes_from_examples(ordered, per_route=per_route, tiers={}, default_tier="cheap",
                                seed=seed)


def router_for(routes: RouteSet, vec: Vectors) -> Router:
    texts, _ = utterance_table(routes)
    return build_router(routes, vec(texts), PLAN, model=vec.model, cache_dir=OUT / "heads")


def scored_on(router: Router, examples: Sequence[Example], vec: Vectors) -> Scored:
    truth = route_indices_of(examples, router.routes.names)
    assert router.classifier is not None
    return score_examples(router.classifier, vec([e[0] for e in examples]), truth,
                          len(router.routes.routes))


def route_indices_of(examples: Sequence[Example], names: Sequence[str]) -> IntArray:
    from gateway.routing.calibrate import Example as Ex

    return route_indices([Ex(t, r) for t, r in examples], names, "<bench>")


def concat(parts: Sequence[Scored]) -> Scored:
    def cat(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts])

    return Scored(cat("truth"), cat("routes"), cat("sims"), cat("log_probs"), parts[0].n_routes)


def calibrate(router: Router, fit: Sequence[Scored], precision: float) -> Calibration:
    return fit_calibration(concat(fit), router.routes.names, FitOptions(precision),
                           model=router.model, source="bench")


def measure(
    router: Router, cal: Calibration, examples: Sequence[Example], vec: Vectors
) -> EvalReport:
    tuned = router.with_calibration(cal)
    truth = route_indices_of(examples, router.routes.names)
    return evaluate(tuned, vec([e[0] for e in examples]), truth)


def knn_baseline(routes: RouteSet, examples: Sequence[Example], vec: Vectors) -> dict[str, float]:
    """The plain nearest-neighbour router: mean cosine of each route's 3 closest utterances."""
    texts, labels = utterance_table(routes)
    x = vec(texts)
    truth = route_indices_of(examples, routes.names)
    q = vec([e[0] for e in examples])
    best = np.empty(len(q), dtype=np.int64)
    top = np.empty(len(q), dtype=np.float32)
    for start in range(0, len(q), 500):
        sims = q[start : start + 500] @ x.T
        per_route = np.stack([
            np.sort(sims[:, labels == r], axis=1)[:, -3:].mean(axis=1)
            for r in range(len(routes.routes))
        ], axis=1)
        best[start : start + 500] = per_route.argmax(axis=1)
        top[start : start + 500] = per_route.max(axis=1)
    inside = truth >= 0
    out: dict[str, float] = {"accuracy": float((best[inside] == truth[inside]).mean())}
    if (~inside).any():
        cut = np.quantile(top[inside], 0.05)
        out["oos_rejected_at_95"] = float((top[~inside] < cut).mean())
    return out


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    accuracy: float
    oos_rejected_at_95: float | None
    baseline_accuracy: float
    baseline_oos_at_95: float | None
    report: EvalReport
    calibration: Calibration


def result(name: str, router: Router, cal: Calibration, test: Sequence[Example],
           vec: Vectors) -> Result:
    report = measure(router, cal, test, vec)
    base = knn_baseline(router.routes, test, vec)
    return Result(name, report.accuracy, report.oos_rejected_at_95, base["accuracy"],
                  base.get("oos_rejected_at_95"), report, cal)


def split(name: str, how: str) -> tuple[list[Example], list[Example]]:
    """(train, test): val is the test set, or a held-out fold of train with ``dev``."""
    train = read(f"{name}_train")
    if how == "val":
        return train, read(f"{name}_val")
    parts = folds(train, 5, seed=99)
    return [e for p in parts[1:] for e in p], parts[0]


def clinc_full(how: str, vec: Vectors, precision: float) -> Result:
    train, test = split("clinc150", how)
    parts = folds(train, 5, seed=1)
    fit = []
    for i, held in enumerate(parts):
        rest = [e for j, p in enumerate(parts) if j != i for e in p]
        fit.append(scored_on(router_for(make_routes(rest), vec), held, vec))
    router = router_for(make_routes(train), vec)
    return result("clinc150 all train", router, calibrate(router, fit, precision), test, vec)


def few_shot(train: Sequence[Example], test: Sequence[Example], seed: int, vec: Vectors,
             precision: float, name: str) -> Result:
    """Routes from 10 utterances per route (and 4/5 of the out-of-scope examples); fitted on
    a fifth of the other utterances and the last fifth of the out-of-scope ones."""
    inside = [e for e in train if e[1] is not None]
    outside = folds([e for e in train if e[1] is None], 5, seed=seed) if len(inside) < len(
        train) else [[] for _ in range(5)]
    routes = make_routes(inside + [e for p in outside[1:] for e in p], per_route=10, seed=seed)
    used = {u for r in routes.routes for u in r.utterances}
    rest = [e for e in inside if e[0] not in used]
    held = folds(rest, 5, seed=seed)[0] + outside[0]  # about 20 per route
    router = router_for(routes, vec)
    cal = calibrate(router, [scored_on(router, held, vec)], precision)
    return result(f"{name} 10 per route (seed {seed})", router, cal, test, vec)


def banking_full(vec: Vectors, precision: float) -> Result:
    train, fit, test = read("banking77_train"), read("banking77_fit"), read("banking77_test")
    router = router_for(make_routes(train), vec)
    cal = calibrate(router, [scored_on(router, fit, vec)], precision)
    return result("banking77 train split", router, cal, test, vec)


def run(how: str, vec: Vectors, precision: float, seeds: int) -> list[Result]:
    train, test = split("clinc150", how)
    results = [clinc_full(how, vec, precision)]
    results += [few_shot(train, test, s, vec, precision, "clinc150") for s in range(seeds)]
    if how == "val":
        results.append(banking_full(vec, precision))
        b_train, b_test = read("banking77_train"), read("banking77_test")
        results += [few_shot(b_train, b_test, s, vec, precision, "banking77")
                    for s in range(seeds)]
    return results


def table(results: Sequence[Result]) -> str:
    rows = ["| set | accuracy | baseline kNN | OOS rejected @95% cov. | baseline | "
            "confident precision | abstention | OOS to default tier | in scope kept |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rep = r.report
        oos = f"{r.oos_rejected_at_95:.1%}" if r.oos_rejected_at_95 is not None else "-"
        base = f"{r.baseline_oos_at_95:.1%}" if r.baseline_oos_at_95 is not None else "-"
        rows.append(
            f"| {r.name} | {r.accuracy:.1%} | {r.baseline_accuracy:.1%} | {oos} | {base} | "
            f"{rep.confident_precision:.1%} | {rep.abstention:.1%} | "
            f"{rep.oos_rejected:.1%} | {rep.in_scope_kept:.1%} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("val", "dev"), default="dev")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.split, Vectors(), args.target_precision, args.seeds)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2, default=str))
    print(table(results))


if __name__ == "__main__":
    main()
