"""Build the word list the semantic cache folds typos against (``gateway/cache/words.txt``).

    .venv/bin/python bench/cache_sets/build_words.py [--data ../shared/data]

Words ``gateway.cache.spelling`` must never fold, besides its frequency list: the embedding
model's whole words (all-MiniLM-L6-v2's WordPiece vocabulary) and the words occurring at least
twice in the public sets below (library names, jargon), one per line. Sources: CLINC150's and
BANKING77's training utterances, and only the tuning half of QQP's ``pairs_dev.json``
(``bench/eval_cache.py``'s split: the held-out half is never read). Licences and attribution:
all-MiniLM-L6-v2's vocabulary (sentence-transformers, Apache-2.0); CLINC150 (Larson et al.,
2019) CC BY 3.0; BANKING77 (Casanueva et al., 2020) CC BY 4.0; Quora Question Pairs via GPTCache's
benchmark (MIT; Quora's terms apply). The file holds words only, no text.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.cache.evaluate import load_pairs, split  # noqa: E402

OUT = ROOT / "gateway/cache/words.txt"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
MIN_COUNT = 2


def corpus(data: Path) -> list[str]:
    texts = [t for t, _ in json.loads((data / "clinc150/train.json").read_text("utf-8"))["train"]]
    with (data / "banking77/train.csv").open(encoding="utf-8") as f:
        texts += [row["text"] for row in csv.DictReader(f)]
    tune = split(load_pairs(data / "qqp/pairs_dev.json"), 0.5)[0]
    texts += [t for p in tune for t in (p.text_a, p.text_b)]
    return texts


def vocabulary() -> set[str]:
    tokenizer = json.loads((ROOT / "models/all-MiniLM-L6-v2/tokenizer.json").read_text("utf-8"))
    return {w for w in tokenizer["model"]["vocab"] if w.isascii() and w.isalpha() and len(w) > 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    args = parser.parse_args()
    counts = Counter(w for text in corpus(args.data) for w in _WORD.findall(text.lower()))
    known = {w for w, n in counts.items() if n >= MIN_COUNT and "'" not in w} | vocabulary()
    lines = sorted(known)
    OUT.write_text("\n".join(lines) + "\n", "utf-8")
    print(f"{OUT}: {len(lines)} words")


if __name__ == "__main__":
    main()
