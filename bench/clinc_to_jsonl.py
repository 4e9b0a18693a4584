"""Convert CLINC150 and BANKING77 into the router's labelled JSON lines.

Each output line is ``{"text": ..., "route": ...}``; CLINC150's ``oos`` intent becomes
``"route": null`` (out of scope). BANKING77 has one file only, so it is split here, per intent and
with a fixed seed, into ``banking77_train.jsonl`` (utterances for the routes), ``banking77_fit``
(for calibration) and ``banking77_test``. MT-bench's first turns (RouteLLM's copy) become
``mtbench_first_turns.jsonl``, labelled with the default routes by category (``MT_BENCH_ROUTES``,
an approximate mapping: a rough check of the packaged routes, not a benchmark).

    python bench/clinc_to_jsonl.py [--data ../shared/data] [--out bench/out]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

OOS = "oos"
Example = tuple[str, str | None]
MT_BENCH_ROUTES = {
    "writing": "long_writing", "roleplay": "chit_chat", "reasoning": "reasoning", "math": "math",
    "coding": "code", "extraction": "extract_format", "stem": "factual",
    "humanities": "analysis_planning",
}


def clinc(path: Path, split: str) -> list[Example]:
    """One CLINC150 split (``train``, ``val``) with ``oos`` mapped to None."""
    data = json.loads(path.read_text("utf-8"))
    items = data[split] + data.get(f"oos_{split}", [])
    return [(str(text), None if intent == OOS else str(intent)) for text, intent in items]


def banking(path: Path) -> list[Example]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["text"].strip(), row["category"]) for row in csv.DictReader(f)]


def mt_bench(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [(str(r["turns"][0]), MT_BENCH_ROUTES[r["category"]]) for r in rows]


def split_per_route(
    examples: Sequence[Example], fractions: Sequence[float], seed: int = 0
) -> list[list[Example]]:
    """Split each route's examples by ``fractions`` (the last part takes the rest)."""
    rng = random.Random(seed)
    by_route: dict[str | None, list[Example]] = defaultdict(list)
    for example in examples:
        by_route[example[1]].append(example)
    parts: list[list[Example]] = [[] for _ in range(len(fractions) + 1)]
    for route in sorted(by_route, key=str):
        items = by_route[route][:]
        rng.shuffle(items)
        start = 0
        for i, fraction in enumerate(fractions):
            end = start + round(fraction * len(items))
            parts[i].extend(items[start:end])
            start = end
        parts[-1].extend(items[start:])
    return parts


def write(path: Path, examples: Iterable[Example]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for text, route in examples:
            f.write(json.dumps({"text": text, "route": route}, ensure_ascii=False) + "\n")
            n += 1
    print(f"{path}: {n} examples")
    return n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    source = args.data / "clinc150"
    # CLINC's train.json / val.json hold their split under the key of the same name.
    write(args.out / "clinc150_train.jsonl", clinc(source / "train.json", "train"))
    write(args.out / "clinc150_val.jsonl", clinc(source / "val.json", "val"))
    rows = banking(args.data / "banking77" / "train.csv")
    train, fit, test = split_per_route(rows, (0.6, 0.2))
    write(args.out / "banking77_train.jsonl", train)
    write(args.out / "banking77_fit.jsonl", fit)
    write(args.out / "banking77_test.jsonl", test)
    questions = args.data / "routellm" / "mt_bench_questions.jsonl"
    if questions.exists():
        write(args.out / "mtbench_first_turns.jsonl", mt_bench(questions))


if __name__ == "__main__":
    main()
