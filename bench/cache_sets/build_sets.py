"""Turn the hand-written pair lists into the JSON pair files ``gateway cache eval`` reads.

    .venv/bin/python bench/cache_sets/build_sets.py

``paraphrases.txt`` (label 1: the same question in another style) and ``adversarial.txt``
(label 0: a question that needs another answer) hold ``group | stored | asked`` lines. Each group
(a style or a kind) is split in half with a fixed seed: ``*_fit.json`` is the only part any rule
may be fitted or tuned on, ``*_heldout.json`` is only reported. Both files name each pair's group.
``*_fresh.txt`` were written later, before the next round of rule changes, and are written whole
to ``*_fresh.json``: never fitted on, run once when the rules are final. ``*_fresh3.txt`` (the
fourth round) were written before that round's rules and are split like the first sets, with
their own seed: ``*_fresh3_fit.json`` may be fitted on, ``*_fresh3_heldout.json`` is only run
once at the end.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 19
FRESH3_SEED = 1904


def read(path: Path, label: int) -> dict[str, list[dict[str, object]]]:
    groups: dict[str, list[dict[str, object]]] = defaultdict(list)
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group, stored, asked = (part.strip() for part in line.split(" | "))
        groups[group].append({"text_a": stored, "text_b": asked, "label": label, "group": group})
    return groups


def halves(name: str, label: int, suffix: str, rng: random.Random) -> None:
    """Split every group of ``name + suffix + .txt`` in half: ``_fit`` and ``_heldout`` files."""
    fit, held = [], []
    for _group, pairs in sorted(read(HERE / f"{name}{suffix}.txt", label).items()):
        rng.shuffle(pairs)
        half = len(pairs) // 2
        fit += pairs[:half]
        held += pairs[half:]
    for part, pairs in (("fit", fit), ("heldout", held)):
        (HERE / f"{name}{suffix}_{part}.json").write_text(json.dumps(pairs, indent=1) + "\n")
        print(f"{name}{suffix}_{part}.json: {len(pairs)} pairs")


def main() -> None:
    rng = random.Random(SEED)
    fresh3_rng = random.Random(FRESH3_SEED)
    for name, label in (("paraphrases", 1), ("adversarial", 0)):
        halves(name, label, "", rng)
        halves(name, label, "_fresh3", fresh3_rng)
        groups = sorted(read(HERE / f"{name}_fresh.txt", label).items())
        fresh = [pair for _group, pairs in groups for pair in pairs]
        (HERE / f"{name}_fresh.json").write_text(json.dumps(fresh, indent=1) + "\n")
        print(f"{name}_fresh.json: {len(fresh)} pairs")


if __name__ == "__main__":
    main()
