"""gateway/cache/calibration.py, evaluate.py and cli.py: the threshold fitted from labelled pairs
through the serving path (real model, real cache), the curve, the calibration file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.cache import cli
from gateway.cache.calibration import (
    fit_margins,
    fit_threshold,
    rescore,
    toml_line,
    write_calibration,
)
from gateway.cache.evaluate import Outcome, Pair, ceiling, curve, point, run_pairs
from gateway.cache.index import VectorSpace
from gateway.core.cache_settings import parse_cache
from gateway.core.config import parse
from gateway.core.toml_table import Table
from tests.cache_fixtures import MODEL_DIR, load_embedder

PAIRS = [
    Pair("How do I reset my password?", "How can I reset my password?", 1),
    Pair("How do I reset my password?", "How do I not reset my password?", 0),
    Pair("What is the capital of Australia?", "What is the capital of Austria?", 0),
    Pair("Is Python faster than Java?", "Is Java faster than Python?", 0),
    Pair("What is the largest ocean on Earth?", "Which is the largest ocean on Earth?", 1),
    Pair("Tell me a joke", "tell me a joke", 1),
]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return load_embedder()


async def test_pairs_run_through_the_cache_with_and_without_guards(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    space = VectorSpace(embedder.name, embedder.dim)
    guarded = await run_pairs(PAIRS, embedder.embed, space, tmp_path / "g")
    plain = await run_pairs(PAIRS, embedder.embed, space, tmp_path / "p", guards=False)
    assert [o.kind is not None for o in guarded] == [True, False, False, False, True, True]
    assert guarded[5].kind == "exact"
    assert point(guarded, 0.9).precision == 1.0
    assert point(plain, 0.5).false_hits == 3
    # every outcome keeps its cosine and the guards' verdict, hit or not
    assert all(0.5 < o.cosine <= 1.0001 for o in guarded)
    assert "negation" in guarded[1].reason and "entity" in guarded[2].reason
    assert guarded[0].differences == () and guarded[0].score == pytest.approx(guarded[0].cosine)
    assert all(o.reason == "" and o.differences == () for o in plain)


def _scored(label: int, cosine: float, *differences: tuple[str, int]) -> Outcome:
    return Outcome(label, "semantic", cosine, cosine, tuple(differences))


def test_rescore_takes_other_margins_off_the_cosine() -> None:
    outcomes = [_scored(1, 0.97, ("added", 2)), _scored(0, 0.96), Outcome(1, "exact", 1.0),
                Outcome(0, None, 0.0, 0.7)]
    rescored = rescore(outcomes, {"added": 0.01})
    assert [o.score for o in rescored] == [pytest.approx(0.95), 0.96, 1.0, 0.0]
    assert rescored[0].cosine == 0.97


def test_fit_margins_charges_the_differences_that_come_with_false_hits() -> None:
    # duplicates differ by nothing; the non-duplicates, as similar, add a word
    outcomes = [_scored(1, 0.99 - i * 0.001) for i in range(40)]
    outcomes += [_scored(0, 0.985 - i * 0.002, ("added", 1)) for i in range(20)]
    outcomes += [Outcome(1, None, 0.0, 0.6)] * 10
    fit = fit_margins(outcomes, {"added": (0.0, 0.05), "person": (0.0, 0.05)}, (0.5, 0.8))
    assert fit.margins == {"added": 0.05, "person": 0.0}  # ties go to the smaller margin
    assert fit.objective == 1.0


def test_fit_picks_the_lowest_threshold_that_keeps_the_precision() -> None:
    outcomes = [Outcome(1, "semantic", 0.99), Outcome(1, "semantic", 0.97),
                Outcome(0, "semantic", 0.96), Outcome(1, "semantic", 0.95),
                Outcome(1, "semantic", 0.93), Outcome(0, "semantic", 0.92),
                Outcome(0, "semantic", 0.91), Outcome(1, None, 0.0)]
    fit = fit_threshold(outcomes, 0.75, min_hits=4)  # the dip at 0.96 serves only 3
    assert fit is not None and fit.threshold == 0.93
    assert (fit.tune.hits, fit.tune.false_hits, fit.tune.hit_rate) == (4, 1, 0.8)
    strict = fit_threshold(outcomes, 0.75, min_hits=1)
    assert strict is not None and strict.threshold == 0.97
    assert fit_threshold([Outcome(0, "semantic", 0.99)], 0.5, min_hits=1) is None
    assert [p.hits for p in curve(outcomes, [0.9, 0.98])] == [4, 1]
    assert toml_line(fit).startswith("threshold = 0.9300")


def test_calibration_file_is_read_back_by_the_settings(tmp_path: Path) -> None:
    fit = fit_threshold([Outcome(1, "semantic", 0.97)], 0.9, min_hits=1)
    assert fit is not None
    write_calibration(tmp_path / "cache_calibration.json", fit, "pairs.json", "m/384")
    settings = parse_cache(Table({}, "cache"), tmp_path)
    assert settings.threshold == pytest.approx(0.97)
    assert settings.threshold_source.endswith("cache_calibration.json")


def test_cli_fit_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"text_a": p.text_a, "text_b": p.text_b, "label": p.label}
                                 for p in PAIRS]))
    settings = parse(
        {"providers": [{"name": "demo", "kind": "demo"}],
         "models": [{"name": "m", "provider": "demo"}],
         "embedder": {"model_dir": str(MODEL_DIR)}, "server": {"data_dir": str(tmp_path)}},
        env={}, base_dir=tmp_path, source="<test>",
    )
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    vectors = str(tmp_path / "vectors.npz")
    args = parser.parse_args(["cache", "fit", "--pairs", str(pairs), "--precision", "0.9",
                              "--min-hits", "1", "--write", "--vectors-cache", vectors])
    assert args.handler(args, settings) == 0
    assert "threshold = " in capsys.readouterr().out
    assert json.loads((tmp_path / "cache_calibration.json").read_text())["threshold"] > 0.5
    args = parser.parse_args(["cache", "eval", "--pairs", str(pairs), "--json",
                              "--vectors-cache", vectors])
    assert args.handler(args, settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["operating_point"]["false_hits"] == 0
    assert report["operating_point"]["hits"] >= 2
    assert report["ceiling"]["false_hits"] == 0


def test_cli_eval_reads_several_pair_files_as_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for label in (0, 1):
        files.append(tmp_path / f"label{label}.json")
        files[-1].write_text(json.dumps([{"text_a": p.text_a, "text_b": p.text_b,
                                          "label": p.label} for p in PAIRS if p.label == label]))
    settings = parse({"providers": [{"name": "demo", "kind": "demo"}],
                      "models": [{"name": "m", "provider": "demo"}],
                      "embedder": {"model_dir": str(MODEL_DIR)}}, env={}, base_dir=tmp_path,
                     source="<test>")
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cache", "eval", "--pairs", *map(str, files), "--json"])
    assert args.handler(args, settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == len(PAIRS)
    assert report["operating_point"]["hits"] >= 2


def test_the_ceiling_serves_what_scores_above_the_best_scored_non_duplicate() -> None:
    outcomes = [Outcome(1, "semantic", 0.97), Outcome(1, "semantic", 0.93),
                Outcome(1, "exact", 1.0), Outcome(1, None, 0.0),
                Outcome(0, "semantic", 0.94), Outcome(0, None, 0.0)]
    best = ceiling(outcomes)
    assert best is not None
    assert (best.hits, best.false_hits, best.hit_rate) == (2, 0, 0.5)
    assert 0.94 < best.threshold <= 0.9401
    assert ceiling([*outcomes, Outcome(0, "exact", 1.0)]) is None  # no threshold refuses it
