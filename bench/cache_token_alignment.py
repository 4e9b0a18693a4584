"""Would a second stage on near misses pay: token alignment with the same model's token vectors?

    .venv/bin/python bench/cache_token_alignment.py [--pairs ../shared/data/qqp/pairs_dev.json]

Runs QQP's tuning half (``bench/eval_cache.py``'s split; the held-out half is never read) through
the real cache with the shipped rule, takes the near misses (the guards pass, score 0.85-0.95),
and scores each pair BERTScore-style: every token of one text matched to its most similar token
of the other by all-MiniLM-L6-v2's contextual token vectors (the encoder's output before
pooling), F1 of the two directions. Prints how well that F1 and the rule's own score separate the
duplicates among those near misses (ROC AUC) and the model time per pair. Reads the model and the
pairs; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder_worker.model import OnnxEmbedder, pad_batch  # noqa: E402
from gateway.cache.cli import CachedEmbedder  # noqa: E402
from gateway.cache.evaluate import load_pairs, run_pairs, split  # noqa: E402
from gateway.cache.fingerprint import normalize_text  # noqa: E402

MODEL = ROOT / "models/all-MiniLM-L6-v2"


def token_vectors(model: OnnxEmbedder, text: str) -> np.ndarray:
    """The text's contextual token vectors, [CLS] and [SEP] left out, unit length."""
    ids, mask, types = pad_batch(model.encode([text]), model._pad_id)
    # the encoder's own output, before pooling: a measurement reaches into the session
    (out,) = model._session.run([model._output], {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    tokens: np.ndarray = np.asarray(out[0][1:-1], dtype=np.float32)
    return np.asarray(tokens / np.linalg.norm(tokens, axis=1, keepdims=True), dtype=np.float32)


def alignment_f1(model: OnnxEmbedder, a: str, b: str) -> float:
    sim = token_vectors(model, a) @ token_vectors(model, b).T
    recall, precision = float(sim.max(1).mean()), float(sim.max(0).mean())
    return 2 * recall * precision / (recall + precision)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path,
                        default=ROOT.parent / "shared/data/qqp/pairs_dev.json")
    args = parser.parse_args()
    pairs = split(load_pairs(args.pairs), 0.5)[0]
    embedder = CachedEmbedder(MODEL, ROOT / "bench/out/qqp_pairs_dev_vectors.jsonl")
    with tempfile.TemporaryDirectory(prefix="token-alignment-") as workdir:
        outcomes = asyncio.run(run_pairs(pairs, embedder, embedder.space, Path(workdir)))
    near = [(p, o) for p, o in zip(pairs, outcomes, strict=True)
            if o.kind == "semantic" and 0.85 <= o.score < 0.95]
    model = OnnxEmbedder(MODEL, threads=2)
    started = time.perf_counter()
    f1 = np.array([alignment_f1(model, normalize_text(p.text_a), normalize_text(p.text_b))
                   for p, _ in near])
    per_pair_ms = (time.perf_counter() - started) / max(len(near), 1) * 1000
    labels = np.array([o.label for _, o in near])
    scores = np.array([o.score for _, o in near])
    print(f"{len(near)} near misses on the tuning half ({int(labels.sum())} duplicates)")
    print(f"ROC AUC among them: the rule's score {auc(labels, scores):.3f}, "
          f"token alignment F1 {auc(labels, f1):.3f}")
    print(f"token vectors for both texts: {per_pair_ms:.1f} ms per pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
