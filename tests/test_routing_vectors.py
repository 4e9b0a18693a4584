"""Tests for gateway/routing/vectors.py: the on-disk utterance vector cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.routing.vectors import FloatArray, VectorCache, embed_cached, model_tag, text_key


class CountingEmbed:
    """A fake model: a vector from the text's key, and a record of what it was asked."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: Sequence[str]) -> FloatArray:
        self.calls.append(list(texts))
        rows = [np.frombuffer(text_key("fake", t), dtype=np.uint8)[:4] for t in texts]
        return np.asarray(rows, dtype=np.float32)


async def test_a_second_run_embeds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    embed = CountingEmbed()
    texts = [f"utterance {i}" for i in range(300)] + ["utterance 0"]
    first = await embed_cached(texts, VectorCache.load(path, "m1"), embed)
    assert sum(len(c) for c in embed.calls) == 300  # the repeat is embedded once
    again = await embed_cached(texts, VectorCache.load(path, "m1"), CountingEmbed())
    np.testing.assert_array_equal(first, again)
    assert np.array_equal(first[0], first[-1])


async def test_keys_ending_in_a_nul_byte_survive_a_reload(tmp_path: Path) -> None:
    # numpy's fixed-size bytes drop trailing NULs: keys are stored as raw uint8 rows instead.
    texts = [f"t{i}" for i in range(2000)]
    assert any(text_key("m", t).endswith(b"\0") for t in texts)
    path = tmp_path / "v.npz"
    await embed_cached(texts, VectorCache.load(path, "m"), CountingEmbed())
    reloaded = VectorCache.load(path, "m")
    assert len(reloaded) == 2000 and reloaded.missing(texts) == []


async def test_another_model_misses(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    await embed_cached(["a", "b"], VectorCache.load(path, "m1"), CountingEmbed())
    assert VectorCache.load(path, "m2").missing(["a", "b"]) == ["a", "b"]
    assert model_tag("m", {"pooling": "cls", "quantize": False}) == "m|pooling=cls"


def test_an_unreadable_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    path.write_bytes(b"not a zip")
    assert len(VectorCache.load(path, "m")) == 0
