"""Semantic cache quality on labelled pairs: the hit/false-hit curve with and without guards.

    .venv/bin/python bench/eval_cache.py [--pairs ../shared/data/qqp/pairs_dev.json]

Store an answer under ``text_a``, ask ``text_b`` (a hit on a label-0 pair is a false hit), through
a real cache (``gateway.cache.evaluate``). The pairs are split in two halves with a fixed seed: the
threshold is fitted on the tuning half (``fit_threshold``) and reported on the held-out half, as
the curve of both. Vectors are cached in ``bench/out/`` (git-ignored); the report is printed as
Markdown and written to ``bench/out/eval_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.calibration import fit_threshold  # noqa: E402
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

THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]


def outcomes(pairs: list[Pair], embedder: CachedEmbedder, guards: bool) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="eval-cache-") as workdir:
        return asyncio.run(run_pairs(pairs, embedder, embedder.space, Path(workdir),
                                     guards=guards))


def table(rows: list[tuple[str, Point]]) -> str:
    lines = ["| threshold | set | guards | precision | duplicate hit rate | false-hit rate |",
             "|---|---|---|---|---|---|"]
    for label, p in rows:
        lines.append(f"| {p.threshold:.2f} | {label} | {p.precision:.3f} | {p.hit_rate:.3f} | "
                     f"{p.false_hit_rate:.4f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path,
                        default=ROOT.parent / "shared/data/qqp/pairs_dev.json")
    parser.add_argument("--precision", type=float, default=0.95)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models/all-MiniLM-L6-v2")
    args = parser.parse_args()
    embedder = CachedEmbedder(args.model_dir, ROOT / "bench/out/qqp_pairs_dev_vectors.npz")
    tune, held = split(load_pairs(args.pairs), 0.5)
    report: dict[str, object] = {"pairs": str(args.pairs), "tune": len(tune), "held_out": len(held)}
    rows: list[tuple[str, Point]] = []
    for guards in (True, False):
        o_tune, o_held = outcomes(tune, embedder, guards), outcomes(held, embedder, guards)
        name = "guards" if guards else "plain"
        report[name] = {"tune": [asdict(p) for p in curve(o_tune, THRESHOLDS)],
                        "held_out": [asdict(p) for p in curve(o_held, THRESHOLDS)]}
        fit = fit_threshold(o_tune, args.precision, min_hits=100)
        if fit is not None:
            report[f"{name}_fit"] = {"threshold": fit.threshold, "tune": asdict(fit.tune),
                                     "held_out": asdict(point(o_held, fit.threshold))}
        for t in THRESHOLDS:
            rows.append((f"held-out | {'on' if guards else 'off'}", point(o_held, t)))
    out = ROOT / "bench/out/eval_cache.json"
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    rows.sort(key=lambda r: (r[1].threshold, r[0]))
    print(table(rows))
    for name in ("guards_fit", "plain_fit"):
        print(name, json.dumps(report.get(name), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
