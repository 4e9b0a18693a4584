"""Semantic cache quality on labelled pairs: the hit/false-hit curve with and without guards.

    .venv/bin/python bench/eval_cache.py [--pairs ../shared/data/qqp/pairs_dev.json]

Store an answer under ``text_a``, ask ``text_b`` (a hit on a label-0 pair is a false hit), through
a real cache (``gateway.cache.evaluate``: SQLite, hnswlib, exact tier, guards, ``accept``). The
pairs are split in two halves with a fixed seed. On the tuning half the guards' margins are refit
(``fit_margins``, compared with the shipped ``guards.MARGINS``) and the threshold is fitted
(``fit_threshold``); both are reported on the held-out half, with the curves of both halves and
the guards' refusals of duplicates by reason. The curves are those of the shipped margins (the
ones the cache applied). The learned verifier (``gateway/cache/verifier.json``, trained on the
tuning half only by ``gateway cache train --holdout 0.5``) is measured the same way, through a
cache serving by it, on a grid of probabilities. Vectors are cached in ``bench/out/``
(git-ignored); the report is printed as Markdown and written to ``bench/out/eval_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.calibration import HIT_RATES, fit_margins, fit_threshold  # noqa: E402
from gateway.cache.cli import CachedEmbedder  # noqa: E402
from gateway.cache.evaluate import (  # noqa: E402
    Outcome,
    Pair,
    Point,
    curve,
    load_pairs,
    point,
    run_pairs,
    split,
)
from gateway.cache.guards import MARGINS  # noqa: E402
from gateway.cache.verifier import load  # noqa: E402
from gateway.core.cache_settings import BUILTIN_VERIFIER  # noqa: E402

# Precision measured on fewer hits is too noisy to hold a fit to: with 200 hits its standard
# error is 1.5 points at 95%, and QQP's top-scored pairs carry label noise (5.6% of the pairs with
# cosine >= 0.99 are labelled non-duplicates).
MIN_HITS = 200
THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]
VERIFIER_THRESHOLDS = [0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96]


def outcomes(pairs: list[Pair], embedder: CachedEmbedder, guards: bool,
             verifier: Path | None = None) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="eval-cache-") as workdir:
        return asyncio.run(run_pairs(pairs, embedder, embedder.space, Path(workdir),
                                     guards=guards, verifier=verifier))


def verifier_report(tune: list[Pair], held: list[Pair], embedder: CachedEmbedder) -> dict[
        str, object]:
    """The shipped verifier's curves, its own operating point and the hit-rate comparison."""
    o_tune = outcomes(tune, embedder, True, BUILTIN_VERIFIER)
    o_held = outcomes(held, embedder, True, BUILTIN_VERIFIER)
    shipped = load(BUILTIN_VERIFIER)
    grid = sorted({*VERIFIER_THRESHOLDS, shipped.threshold})
    return {"threshold": shipped.threshold, "trained_on": dict(shipped.trained_on),
            "tune": [asdict(p) for p in curve(o_tune, grid)],
            "held_out": [asdict(p) for p in curve(o_held, grid)],
            "held_out_at_hit_rate": {str(r): asdict(p) if (p := at_hit_rate(o_held, r)) else None
                                     for r in (0.10, 0.15, 0.20)}}


def at_hit_rate(o: list[Outcome], rate: float) -> Point | None:
    """The highest threshold whose hit rate reaches ``rate``."""
    scores = sorted({x.score for x in o if x.kind is not None}, reverse=True)
    for t in scores:
        p = point(o, t)
        if p.hit_rate >= rate:
            return p
    return None


def refusals(o: list[Outcome], threshold: float) -> dict[str, list[int]]:
    """Pairs at or above ``threshold`` (cosine) that the guards refused, or whose margin pushed
    them below it, by reason: [duplicates, non-duplicates]."""
    counts: Counter[tuple[str, int]] = Counter()
    for x in o:
        if x.cosine < threshold or x.kind == "exact" or (x.kind and x.score >= threshold):
            continue
        reason = x.reason.split(":")[0].split("'")[0].strip() if x.reason else (
            "margin: " + ", ".join(k for k, _ in x.differences))
        counts[(reason, 1 if x.label == 1 else 0)] += 1
    reasons = sorted({r for r, _ in counts}, key=lambda r: -counts[(r, 1)] - counts[(r, 0)])
    return {r: [counts[(r, 1)], counts[(r, 0)]] for r in reasons}


def table(rows: list[tuple[str, Point]]) -> str:
    lines = ["| threshold | set | guards | precision | duplicate hit rate | false-hit rate |",
             "|---|---|---|---|---|---|"]
    for label, p in rows:
        lines.append(f"| {p.threshold:.3f} | {label} | {p.precision:.3f} | {p.hit_rate:.3f} | "
                     f"{p.false_hit_rate:.4f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path,
                        default=ROOT.parent / "shared/data/qqp/pairs_dev.json")
    parser.add_argument("--precision", type=float, default=0.95)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models/all-MiniLM-L6-v2")
    args = parser.parse_args()
    embedder = CachedEmbedder(args.model_dir, ROOT / "bench/out/qqp_pairs_dev_vectors.jsonl")
    tune, held = split(load_pairs(args.pairs), 0.5)
    report: dict[str, object] = {"pairs": str(args.pairs), "tune": len(tune), "held_out": len(held),
                                 "margins": dict(MARGINS)}
    rows: list[tuple[str, Point]] = []
    for guards in (True, False):
        o_tune, o_held = outcomes(tune, embedder, guards), outcomes(held, embedder, guards)
        name = "guards" if guards else "plain"
        report[name] = {"tune": [asdict(p) for p in curve(o_tune, THRESHOLDS)],
                        "held_out": [asdict(p) for p in curve(o_held, THRESHOLDS)],
                        "held_out_at_hit_rate": {
                            str(r): asdict(p) if (p := at_hit_rate(o_held, r)) else None
                            for r in (0.10, 0.15, 0.20)}}
        fit = fit_threshold(o_tune, args.precision, min_hits=MIN_HITS)
        if fit is not None:
            report[f"{name}_fit"] = {"threshold": fit.threshold, "tune": asdict(fit.tune),
                                     "held_out": asdict(point(o_held, fit.threshold))}
        if guards:
            margins = fit_margins(o_tune)
            report["margin_fit"] = {"tune": asdict(margins),
                                    "held_out_shipped": fit_margins(o_held, {
                                        k: (v,) for k, v in MARGINS.items()}).objective,
                                    "hit_rates": HIT_RATES}
            report["refusals_tune"] = refusals(o_tune, 0.90)
        for t in THRESHOLDS:
            rows.append((f"held-out | {'on' if guards else 'off'}", point(o_held, t)))
    report["verifier"] = verifier_report(tune, held, embedder)
    out = ROOT / "bench/out/eval_cache.json"
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    rows.sort(key=lambda r: (r[1].threshold, r[0]))
    print(table(rows))
    for name in ("guards_fit", "plain_fit", "margin_fit", "refusals_tune", "verifier"):
        print(name, json.dumps(report.get(name), indent=1))
    for name in ("guards", "plain"):
        print(name, "held-out at hit rate", json.dumps(
            report[name]["held_out_at_hit_rate"], indent=1))  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
