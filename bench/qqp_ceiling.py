"""How far any serving rule could go on QQP: the false hits that ask the same question.

    .venv/bin/python bench/qqp_ceiling.py [--pairs ../shared/data/qqp/pairs_dev.json]

Runs every pair of the file through a real cache with the shipped rule (``gateway.cache.evaluate``:
store an answer under ``text_a``, ask ``text_b``), then reads ``bench/qqp_false_hits_audit.json``:
a reading, by this project, of each false hit (a label-0 pair served) at a score of 0.92 or more,
saying whether the two questions differ in anything they ask (``visible_difference``, with a
note) or not (the same question, labelled a non-duplicate). The audit must cover every such false
hit of the current rule; the script stops, naming the pairs, when it does not.

With ``--held-out``, only the half of the pairs that ``bench/eval_cache.py`` never fits on.
Printed per threshold: the duplicate hit rate and precision as served, the precision against the
audited labels (a false hit that asks the same question counts as right), and the precision of an
oracle that refuses every false hit with a visible difference and keeps every hit: no rule that
serves these duplicates can do better, whatever it looks at, because what is left is pairs
labelled non-duplicate that ask the same thing. Texts are Quora Question Pairs from GPTCache's
``similiar_qqp_full`` (see ``../shared/data/README.md``; Quora's terms apply).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.cli import CachedEmbedder  # noqa: E402
from gateway.cache.evaluate import Outcome, Pair, load_pairs, run_pairs, split  # noqa: E402

AUDIT = ROOT / "bench/qqp_false_hits_audit.json"
AUDITED_FROM = 0.92
THRESHOLDS = [0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path,
                        default=ROOT.parent / "shared/data/qqp/pairs_dev.json")
    parser.add_argument("--held-out", action="store_true",
                        help="only the held-out half of bench/eval_cache.py's split")
    args = parser.parse_args()
    pairs = load_pairs(args.pairs)
    if args.held_out:
        pairs = split(pairs, 0.5)[1]
    embedder = CachedEmbedder(ROOT / "models/all-MiniLM-L6-v2",
                              ROOT / "bench/out/qqp_pairs_dev_vectors.jsonl")
    with tempfile.TemporaryDirectory(prefix="qqp-ceiling-") as workdir:
        outcomes = asyncio.run(run_pairs(pairs, embedder, embedder.space, Path(workdir)))
    audit = {(a["text_a"], a["text_b"]): a for a in json.loads(AUDIT.read_text("utf-8"))}
    false_hits = [(p, o) for p, o in zip(pairs, outcomes, strict=True)
                  if o.label == 0 and o.hit(AUDITED_FROM)]
    missing = [p for p, _ in false_hits if (p.text_a, p.text_b) not in audit]
    if missing:
        for p in missing:
            print(f"not audited: {p.text_a!r} / {p.text_b!r}")
        return 1
    visible = {(p.text_a, p.text_b) for p, _ in false_hits
               if audit[(p.text_a, p.text_b)]["visible_difference"]}
    duplicates = sum(1 for o in outcomes if o.label == 1)
    print(f"{len(pairs)} pairs, {duplicates} duplicates; false hits at >= {AUDITED_FROM}: "
          f"{len(false_hits)}, of them {len(visible)} with a visible difference\n")
    print("| threshold | hit rate | precision, served | false hits | of them the same question "
          "| precision, audited | precision, oracle |\n|---|---|---|---|---|---|---|")
    for t in THRESHOLDS:
        hits = sum(1 for o in outcomes if o.label == 1 and o.hit(t))
        wrong = [(p, o) for p, o in false_hits if o.hit(t)]
        same = sum(1 for p, _ in wrong if (p.text_a, p.text_b) not in visible)
        served = hits + len(wrong)
        print(f"| {t:.2f} | {hits / duplicates:.3f} | {hits / served:.3f} | {len(wrong)} | "
              f"{same} | {(hits + same) / served:.3f} | {hits / (hits + same):.3f} |")
    at_20 = _at_hit_rate(outcomes, false_hits, visible, duplicates, 0.20)
    print(f"\nat a 20% duplicate hit rate: precision {at_20[0]:.3f} served, "
          f"{at_20[1]:.3f} for the oracle")
    for floor, what in ((0.99, "audited precision >= 0.99"),
                        (1.0, "no false hit with a visible difference")):
        t, rate = _ceiling(outcomes, false_hits, visible, duplicates, floor)
        print(f"highest hit rate with {what}: {rate:.3f} (threshold {t:.4f})")
    return 0


def _ceiling(outcomes: list[Outcome], false_hits: list[tuple[Pair, Outcome]],
             visible: set[tuple[str, str]], duplicates: int,
             floor: float) -> tuple[float, float]:
    """(threshold, hit rate): the lowest audited threshold at which the precision against the
    audited labels (a false hit asking the same question counts as right) holds ``floor``."""
    scores = sorted({o.score for o in outcomes if o.kind and o.score >= AUDITED_FROM})
    for t in scores:
        hits = sum(1 for o in outcomes if o.label == 1 and o.hit(t))
        wrong = [(p, o) for p, o in false_hits if o.hit(t)]
        same = sum(1 for p, _ in wrong if (p.text_a, p.text_b) not in visible)
        if hits and (hits + same) / (hits + len(wrong)) >= floor:
            return t, hits / duplicates
    return 1.0, 0.0


def _at_hit_rate(outcomes: list[Outcome], false_hits: list[tuple[Pair, Outcome]],
                 visible: set[tuple[str, str]], duplicates: int,
                 rate: float) -> tuple[float, float]:
    """(precision served, oracle precision) at the highest score that serves ``rate``."""
    scores = sorted({o.score for o in outcomes if o.label == 1 and o.kind}, reverse=True)
    for t in scores:
        hits = sum(1 for o in outcomes if o.label == 1 and o.hit(t))
        if hits >= rate * duplicates:
            wrong = [(p, o) for p, o in false_hits if o.hit(t)]
            same = sum(1 for p, _ in wrong if (p.text_a, p.text_b) not in visible)
            return hits / (hits + len(wrong)), hits / (hits + same)
    return 0.0, 0.0


if __name__ == "__main__":
    sys.exit(main())
