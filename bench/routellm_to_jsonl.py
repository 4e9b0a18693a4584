"""Convert RouteLLM's per-prompt correctness data into ``gateway learn``'s labelled JSON lines.

Each output line is ``{"text": ..., "outcomes": {"cheap": bool, "reasoning": bool},
"group": ...}``: whether the weak model (Mixtral-8x7B, the cheap tier) and the strong one
(GPT-4, the reasoning tier) answered the prompt correctly; ``group`` is the MMLU subject (or
``gsm8k``), kept for cross-validation across subjects. The splits never share what they are
scored on:

- MMLU: whole subjects are held out. A seeded shuffle of the subjects puts about a third of
  them (``--test-share``) in ``mmlu_test.jsonl`` and the rest in ``mmlu_train.jsonl``;
- GSM8K: split by question (``gsm8k_train.jsonl``, ``gsm8k_test.jsonl``).

Within each file the lines are shuffled (seeded), so a replay sees the subjects mixed, as a
gateway would. Source: github.com/lm-sys/RouteLLM ``routellm/evals/`` (Apache-2.0; MMLU and
GSM8K are MIT), copied to ``../shared/data/routellm``.

    python bench/routellm_to_jsonl.py [--data ../shared/data/routellm] [--out bench/out]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
Row = dict[str, object]


def read_csv(path: Path, group: str) -> list[Row]:
    """One RouteLLM results file as labelled rows (prompts repeated in a file are kept once)."""
    rows: dict[str, Row] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            text = record["prompt"].strip()
            rows.setdefault(text, {
                "text": text,
                "outcomes": {"cheap": record[WEAK] == "True",
                             "reasoning": record[STRONG] == "True"},
                "group": group,
            })
    return list(rows.values())


def split_subjects(
    subjects: Sequence[str], test_share: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, test) subjects: a seeded shuffle, ``test_share`` of them (at least one) held out."""
    order = sorted(subjects)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * test_share))
    return sorted(order[n_test:]), sorted(order[:n_test])


def split_rows(rows: Sequence[Row], test_share: float, seed: int) -> tuple[list[Row], list[Row]]:
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * test_share))
    return order[n_test:], order[:n_test]


def write(path: Path, rows: Iterable[Row], seed: int) -> int:
    items = list(rows)
    random.Random(seed).shuffle(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in items:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(items)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/routellm"))
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--test-share", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    by_subject = {
        p.stem.removeprefix("mmlu_"): read_csv(p, p.stem.removeprefix("mmlu_"))
        for p in sorted((args.data / "mmlu").glob("mmlu_*.csv"))
    }
    train, test = split_subjects(list(by_subject), args.test_share, args.seed)
    for name, subjects in (("mmlu_train", train), ("mmlu_test", test)):
        n = write(args.out / f"{name}.jsonl", (r for s in subjects for r in by_subject[s]),
                  args.seed)
        print(f"{name}.jsonl: {n} prompts from {len(subjects)} subjects: {', '.join(subjects)}")
    gsm = read_csv(args.data / "gsm8k_responses_dev.csv", "gsm8k")
    gsm_train, gsm_test = split_rows(gsm, 0.5, args.seed)
    for name, rows in (("gsm8k_train", gsm_train), ("gsm8k_test", gsm_test)):
        print(f"{name}.jsonl: {write(args.out / f'{name}.jsonl', rows, args.seed)} questions")


if __name__ == "__main__":
    main()
