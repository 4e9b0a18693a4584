"""Tests for gateway/cache/cli.py: the vectors cache (by model and text, appended) and the
words its reports use."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.cli import CachedEmbedder, format_curve, rule_label
from gateway.cache.evaluate import Point
from gateway.core.toml_table import ConfigError
from tests.test_cli import _gateway, _one_line_error

pytest_plugins = ["tests.embedder_fixtures"]
pytestmark = pytest.mark.timeout(60)


def test_the_vectors_cache_is_keyed_by_model_and_appended_to(
    model_dir: Path, tmp_path: Path
) -> None:
    file = tmp_path / "vectors.jsonl"
    stale = np.ones(384, dtype="<f4")
    file.write_text(json.dumps({"space": "some-older-model/384", "text": "hello there",
                                "vector": base64.b64encode(stale.tobytes()).decode()}) + "\n")
    first = CachedEmbedder(model_dir, file)
    vectors = first(["hello there", "good morning"])
    assert not np.allclose(vectors[0], stale)  # another model's vector is never reused
    assert np.allclose(vectors, first.model.embed(["hello there", "good morning"]), atol=1e-5)
    written = file.read_text()
    assert len(written.splitlines()) == 3

    second = CachedEmbedder(model_dir, file)
    calls: list[list[str]] = []
    real_embed = second.model.embed
    second.model.embed = lambda texts: calls.append(list(texts)) or real_embed(texts)  # type: ignore[method-assign]
    again = second(["good morning", "hello there", "a new one"])
    assert calls == [["a new one"]]  # only what the file lacked was embedded
    assert np.allclose(again[:2], vectors[::-1])
    after = file.read_text()
    assert after.startswith(written) and len(after.splitlines()) == 4  # appended, not rewritten


def test_an_old_npz_vectors_cache_is_refused_by_name(model_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "vectors.npz"
    np.savez(old, texts=np.array(["a"]), vectors=np.zeros((1, 384)))
    with pytest.raises(ConfigError, match="older version"):
        CachedEmbedder(model_dir, old)


def test_the_curve_counts_what_was_served_and_names_the_rule_in_words() -> None:
    table = format_curve([Point(0.9, 0.8, 0.5, 0.1, hits=8, false_hits=2)])
    header, row = table.splitlines()
    assert header.split()[4:] == ["served", "true-hits", "false-hits"]
    assert row.split()[4:] == ["10", "8", "2"]
    assert "guards on" in rule_label("cosine", True) and "cosine" not in rule_label(
        "verifier", True)
    assert rule_label("cosine", False) == "plain cosine, guards off"


def test_training_on_too_few_pairs_is_one_line_naming_the_file(
    model_dir: Path, tmp_path: Path,
) -> None:
    """Before: training's ValueError reached the command line as a traceback."""
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"text_a": "What is 2+2?", "text_b": "what is 2 + 2",
                                  "label": 1}]))
    result = _gateway(tmp_path, "--log-level", "error", "cache", "train", "--pairs", str(pairs),
                      "--out", str(tmp_path / "verifier.json"), "--model-dir", str(model_dir))
    line = _one_line_error(result, 2)
    assert f"{pairs}: only" in line and "too few to train a verifier" in line
    assert not (tmp_path / "verifier.json").exists()
