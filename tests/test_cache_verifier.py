"""gateway/cache/verifier.py, rule.py and training.py: the learned verifier loaded from its file,
used only for the embedding model it was trained on, judging candidates through the real cache
(real model, SQLite, hnswlib), and trained by ``gateway cache train``.

``tests/data/cache_qqp_sample.json``: 240 Quora Question Pairs copied from the team's shared
data (a slice of GPTCache's benchmark, github.com/zilliztech/GPTCache ``examples/benchmark/``,
repository MIT; Quora Question Pairs terms apply)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.cache import cli
from gateway.cache.index import VectorSpace
from gateway.cache.verifier import FEATURES, load, save
from gateway.core.cache_settings import BUILTIN_VERIFIER, parse_cache
from gateway.core.config import parse
from gateway.core.toml_table import Table
from tests.cache_fixtures import CONTEXT, MODEL_DIR, ROOT, answer, load_embedder, open_cache

SAMPLE = ROOT / "tests" / "data" / "cache_qqp_sample.json"


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return load_embedder()


def test_shipped_verifier_is_stamped_with_its_model_and_attributed() -> None:
    verifier = load(BUILTIN_VERIFIER)
    assert (verifier.model, verifier.dim) == ("all-MiniLM-L6-v2", 384)
    assert len(verifier.weights) == len(FEATURES)
    assert 0.5 < verifier.threshold < 1.0 and 0.0 < verifier.min_cosine < 1.0
    assert verifier.applies_to(VectorSpace("all-MiniLM-L6-v2|mean|norm=True|fp32", 384))
    assert not verifier.applies_to(VectorSpace("bge-small-en-v1.5|cls", 384))
    assert not verifier.applies_to(VectorSpace("all-MiniLM-L6-v2", 768))
    assert "GPTCache" in json.loads(BUILTIN_VERIFIER.read_text())["attribution"]


def test_a_file_that_is_no_verifier_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "weights.json"
    bad.write_text(json.dumps({"format": 1, "features": ["cosine"], "weights": [1.0]}))
    with pytest.raises(ValueError, match=r"weights\.json"):
        load(bad)


def test_verifier_is_off_unless_configured(tmp_path: Path) -> None:
    assert parse_cache(Table({}, "cache"), tmp_path).verifier is None
    on = parse_cache(Table({"verifier": "builtin", "verifier_threshold": 0.8}, "cache"), tmp_path)
    assert (on.verifier, on.verifier_threshold) == (BUILTIN_VERIFIER, 0.8)


async def test_another_embedding_model_falls_back_to_cosine_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        cache = await open_cache(tmp_path, space=VectorSpace("bge-small-en-v1.5|cls", 384),
                                 verifier=BUILTIN_VERIFIER)
    try:
        assert cache.rule.name == "cosine" and cache.rule.floor == cache.settings.threshold
        assert cache.stats()["rule"] == "cosine"
        warnings = [r for r in caplog.records if "verifier" in r.getMessage()]
        assert len(warnings) == 1
        assert "all-MiniLM-L6-v2/384" in warnings[0].getMessage()
        assert "bge-small-en-v1.5/384" in warnings[0].getMessage()
    finally:
        await cache.close()


async def test_duplicate_served_and_non_duplicate_refused_by_the_verifier(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    cache = await open_cache(tmp_path, verifier=BUILTIN_VERIFIER)
    try:
        assert cache.rule.name == "verifier" and cache.stats()["rule"] == "verifier"
        stored = {"a": "How do I reset my password?", "b": "How can I improve my English?"}
        for namespace, text in stored.items():
            await cache.store(namespace, CONTEXT, text, embedder.embed([text])[0], answer())
        await cache.flush()
        asked = "How can I reset my password?"
        hit = await cache.lookup("a", CONTEXT, asked, embedder.embed([asked])[0], "semantic")
        assert hit is not None and hit.kind == "semantic"
        # the guards pass it (only added words), the verifier does not
        asked = "How can I improve my English speaking skills quickly?"
        vector = embedder.embed([asked])[0]
        assert await cache.lookup("b", CONTEXT, asked, vector, "semantic") is None
        verdict = cache.rule.judge(stored["b"], asked, float(vector @ embedder.embed(
            [stored["b"]])[0]))
        assert verdict.reason.startswith("verifier")
    finally:
        await cache.close()


async def test_verifier_threshold_is_the_operating_point(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    text, asked = "How do I reset my password?", "How can I reset my password?"
    strict = await open_cache(tmp_path, verifier=BUILTIN_VERIFIER, verifier_threshold=0.999)
    try:
        await strict.store("a", CONTEXT, text, embedder.embed([text])[0], answer())
        await strict.flush()
        assert await strict.lookup("a", CONTEXT, asked, embedder.embed([asked])[0],
                                   "semantic") is None
    finally:
        await strict.close()


def test_cli_trains_a_verifier_the_cache_then_serves_by(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = parse(
        {"providers": [{"name": "demo", "kind": "demo"}],
         "models": [{"name": "m", "provider": "demo"}],
         "embedder": {"model_dir": str(MODEL_DIR)}, "server": {"data_dir": str(tmp_path)},
         "cache": {"verifier": str(tmp_path / "verifier.json")}},
        env={}, base_dir=tmp_path, source="<test>",
    )
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    vectors = str(tmp_path / "vectors.npz")
    out = tmp_path / "verifier.json"
    args = parser.parse_args(["cache", "train", "--pairs", str(SAMPLE), "--out", str(out),
                              "--holdout", "0.5", "--min-hits", "5", "--precision", "0.9",
                              "--vectors-cache", vectors])
    assert args.handler(args, settings) == 0
    printed = capsys.readouterr().out
    assert "held-out pairs: precision" in printed
    verifier = load(out)
    assert verifier.model == "all-MiniLM-L6-v2" and verifier.trained_on["count"] == 120
    save(replace(verifier, threshold=0.5), out)  # a round trip keeps the file loadable
    assert load(out).threshold == 0.5
    args = parser.parse_args(["cache", "eval", "--pairs", str(SAMPLE), "--json",
                              "--vectors-cache", vectors])
    assert args.handler(args, settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rule"] == "verifier"
    assert report["operating_point"]["threshold"] == 0.5
    assert report["operating_point"]["hits"] > 0
