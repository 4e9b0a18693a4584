"""``gateway cache fit|eval|train``: the threshold from labelled pairs, the curve it sits on,
and the learned verifier's weights.

    gateway cache fit   --pairs FILE --precision P [--holdout 0.5] [--write]
    gateway cache eval  --pairs FILE [--threshold T] [--no-guards] [--json]
    gateway cache train --pairs FILE --out PATH [--holdout 0.5] [--precision P]

All run the pairs through a real cache (``gateway.cache.evaluate``), guards included, with the
embedding model of the configuration (or ``--model-dir``) loaded in this process, serving by the
configured rule: the verifier of ``[cache] verifier`` when it applies to that model, else cosine
and margin. ``fit`` chooses that rule's threshold, prints the ``[cache]`` TOML line and, with
``--write``, writes the calibration file that the gateway reads at start-up when its config sets
no threshold. ``train`` fits verifier weights (``gateway.cache.training``) and writes them to
``--out``; with ``--holdout`` it reports the held-out pairs through a cache serving by them.
``--vectors-cache FILE`` keeps the pairs' vectors, by model and text, in an append-only file so
later runs skip the embedding. Leaves set ``handler(args, settings)``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from embedder_worker.model import OnnxEmbedder
from embedder_worker.model_files import missing_model
from gateway.cache.calibration import (
    Fit,
    fit_threshold,
    toml_line,
    with_held_out,
    write_calibration,
)
from gateway.cache.evaluate import (
    Outcome,
    Pair,
    Point,
    by_group,
    ceiling,
    curve,
    default_thresholds,
    load_pairs,
    point,
    run_pairs,
    split,
)
from gateway.cache.index import FloatArray, VectorSpace
from gateway.cache.rule import serving_rule
from gateway.cache.training import DEFAULT_L2, TrainOptions, train_verifier
from gateway.cache.verifier import save
from gateway.core.cache_settings import CacheSettings, parse_cache
from gateway.core.config import Settings
from gateway.core.toml_table import ConfigError, Table, text_lines

Handler = Callable[[argparse.Namespace, Settings], int]
Common = Callable[[argparse.ArgumentParser], None]
DEFAULT_MODEL_DIR = Path("models/all-MiniLM-L6-v2")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: Common | None = None) -> None:
    """Register ``cache fit`` and ``cache eval``; ``common`` adds shared options (``--config``)."""
    cache = subparsers.add_parser("cache", help="fit and evaluate the semantic cache")
    sub = cache.add_subparsers(dest="cache_command", required=True)
    fit = _leaf(sub, "fit", "choose the threshold from labelled pairs", run_fit, common)
    fit.add_argument("--precision", type=_share, required=True, metavar="P",
                     help="hit precision to reach (0..1), guards included")
    fit.add_argument("--holdout", type=_share, default=0.0, metavar="F",
                     help="share of pairs kept aside to report held-out figures (default 0)")
    fit.add_argument("--min-hits", type=int, default=30, metavar="N",
                     help="ignore precision dips above thresholds serving fewer hits (30)")
    fit.add_argument("--write", action="store_true",
                     help="write the calibration file the gateway reads at start-up")
    evaluation = _leaf(sub, "eval", "hit rate against false-hit rate on labelled pairs",
                       run_eval, common)
    evaluation.add_argument("--threshold", type=_share, default=None, metavar="T",
                            help="the operating point to report (default: the configured one)")
    evaluation.add_argument("--json", action="store_true", help="print the report as JSON")
    training = _leaf(sub, "train", "train the learned verifier from labelled pairs", run_train,
                     common)
    training.add_argument("--out", type=Path, required=True, help="verifier file to write")
    training.add_argument("--holdout", type=_share, default=0.0, metavar="F",
                          help="share of pairs kept aside to report held-out figures (default 0)")
    training.add_argument("--precision", type=_share, default=0.95, metavar="P",
                          help="hit precision the operating point aims at (0.95)")
    training.add_argument("--min-hits", type=int, default=200, metavar="N",
                          help="ignore precision dips above thresholds serving fewer hits (200)")
    training.add_argument("--l2", type=float, default=DEFAULT_L2,
                          help="L2 penalty on the standardised weights")


def _leaf(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
          handler: Handler, common: Common | None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    if common is not None:
        common(parser)
    parser.add_argument("--pairs", type=Path, required=True, nargs="+", metavar="FILE",
                        help="JSON lists of {text_a, text_b, label}, read as one")
    parser.add_argument("--no-guards", dest="guards", action="store_false",
                        help="measure plain cosine similarity, without the guards")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="embedding model (default: the configured embedder's)")
    parser.add_argument("--vectors-cache", type=Path, default=None,
                        help="file caching the pairs' vectors between runs (JSON lines, by "
                             "model and text; new vectors are appended)")
    parser.set_defaults(handler=handler)
    return parser


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return number


def cache_settings(settings: Settings) -> CacheSettings:
    """The configuration's cache section, or the defaults in its data folder."""
    value = getattr(settings, "cache", None)
    if isinstance(value, CacheSettings):
        return value
    return parse_cache(Table({}), settings.server.data_dir)


class CachedEmbedder:
    """The model in this process, with an optional on-disk cache of vectors by model and text.

    The cache file is append-only JSON lines, one vector each (``{"space": model/dim, "text",
    "vector": base64 float32}``): a batch of new texts adds its lines and nothing is rewritten;
    lines of another model (or dimension) are kept but never used, so changing the model cannot
    reuse stale vectors. A half-written last line (an interrupted run) is skipped.
    """

    def __init__(self, model_dir: Path, cache_file: Path | None) -> None:
        if (problem := missing_model(model_dir)) is not None:
            raise ConfigError(problem)
        self.model = OnnxEmbedder(model_dir, threads=2)
        self.space = VectorSpace(self.model.name, self.model.dim)
        self._key = f"{self.space.model}/{self.space.dim}"
        self._file = cache_file
        self._known: dict[str, FloatArray] = {}
        if cache_file is not None and cache_file.exists():
            self._known = read_vector_file(cache_file, self._key)

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        missing = sorted({t for t in texts if t not in self._known})
        if missing:
            fresh = dict(zip(missing, self.model.embed(missing), strict=True))
            self._known.update(fresh)
            self._append(fresh)
        return np.stack([self._known[t] for t in texts]).astype(np.float32)

    def _append(self, fresh: dict[str, FloatArray]) -> None:
        if self._file is None:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"space": self._key, "text": text, "vector": base64.b64encode(
            np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")}) + "\n"
            for text, vector in fresh.items()]
        with self._file.open("a", encoding="utf-8") as f:
            f.write("".join(lines))


def read_vector_file(path: Path, space: str | None = None) -> dict[str, FloatArray]:
    """The vectors of ``space`` (``model/dim``; None: every space) in a cache file, by text;
    ``ConfigError`` for a file of another kind."""
    known: dict[str, FloatArray] = {}
    with path.open("rb") as f:
        if f.read(2) == b"PK":
            raise ConfigError(f"{path}: an .npz vectors cache of an older version (vectors keyed "
                              "by text alone); delete it or name a new file")
    for line in text_lines(path.read_text("utf-8")):
        try:
            entry = json.loads(line)
            vector = np.frombuffer(base64.b64decode(entry["vector"]), dtype="<f4")
        except (ValueError, KeyError, TypeError):
            continue  # an interrupted run's half line
        wanted = space is None or (entry.get("space") == space
                                   and f"{vector.shape[0]}" == space.rsplit("/", 1)[-1])
        if wanted:
            known[str(entry["text"])] = vector
    return known


def _embedder(args: argparse.Namespace, settings: Settings) -> CachedEmbedder:
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = settings.embedder.model_dir if settings.embedder else DEFAULT_MODEL_DIR
    return CachedEmbedder(model_dir, args.vectors_cache)


def _outcomes(pairs: Sequence[Pair], embedder: CachedEmbedder, guards: bool,
              verifier: Path | None = None) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="cache-eval-") as workdir:
        return asyncio.run(run_pairs(pairs, embedder, embedder.space, Path(workdir),
                                     guards=guards, verifier=verifier))


def _pairs(paths: Sequence[Path]) -> list[Pair]:
    """The labelled pairs of every file, in order; a file that is not what the command needs
    is a one-line error."""
    pairs: list[Pair] = []
    for path in paths:
        try:
            pairs.extend(load_pairs(path))
        except ValueError as exc:  # JSON that does not parse, or an item without its fields
            raise ConfigError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)
                              ) from exc
    return pairs


def _names(paths: Sequence[Path]) -> str:
    return " ".join(str(p) for p in paths)


def _rule(args: argparse.Namespace, settings: Settings, space: VectorSpace) -> str:
    """The rule the configured cache would serve by, with these vectors."""
    return serving_rule(cache_settings(settings), space).name if args.guards else "cosine"


def run_fit(args: argparse.Namespace, settings: Settings) -> int:
    pairs = _pairs(args.pairs)
    tune, held_out = split(pairs, args.holdout) if args.holdout else (pairs, [])
    embedder = _embedder(args, settings)
    verifier = cache_settings(settings).verifier
    fit = fit_threshold(_outcomes(tune, embedder, args.guards, verifier), args.precision,
                        args.min_hits)
    if fit is None:
        print(f"no threshold reaches precision {args.precision:.3f} on these pairs",
              file=sys.stderr)
        return 1
    fit = replace(fit, rule=_rule(args, settings, embedder.space))
    if held_out:
        fit = with_held_out(fit, _outcomes(held_out, embedder, args.guards, verifier))
    _print_fit(fit, len(tune), len(held_out), args.guards)
    print(toml_line(fit))
    if args.write:
        path = cache_settings(settings).calibration_file
        space = f"{embedder.space.model}/{embedder.space.dim}"
        write_calibration(path, fit, _names(args.pairs), space)
        print(f"wrote {path}")
    return 0


def rule_label(rule: str, guards: bool) -> str:
    """What a result was measured with, in words: the score and whether the guards judged."""
    if not guards:
        return "plain cosine, guards off"
    if rule == "verifier":
        return "learned verifier, guards on"
    return "cosine minus the guards' margins, guards on"


def _print_fit(fit: Fit, tuned: int, held: int, guards: bool) -> None:
    t = fit.tune
    print(f"{rule_label(fit.rule, guards)}: threshold {fit.threshold:.4f}: on {tuned} tuning "
          f"pairs precision "
          f"{t.precision:.3f}, hit rate {t.hit_rate:.3f}, false-hit rate {t.false_hit_rate:.4f}")
    if fit.held_out is not None:
        h = fit.held_out
        print(f"  on {held} held-out pairs: precision {h.precision:.3f}, hit rate "
              f"{h.hit_rate:.3f}, false-hit rate {h.false_hit_rate:.4f}")


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    pairs = _pairs(args.pairs)
    configured = cache_settings(settings)
    embedder = _embedder(args, settings)
    rule = serving_rule(configured, embedder.space) if args.guards else None
    threshold = args.threshold
    if threshold is None:
        threshold = rule.verifier_threshold if rule and rule.uses_verifier \
            else configured.threshold
    outcomes = _outcomes(pairs, embedder, args.guards, configured.verifier)
    name = rule.name if rule else "cosine"
    grid = verifier_thresholds() if name == "verifier" else default_thresholds()
    points = curve(outcomes, sorted({*grid, threshold}))
    chosen = point(outcomes, threshold)
    best = ceiling(outcomes)
    if args.json:
        print(json.dumps({"pairs": len(pairs), "guards": args.guards, "rule": name,
                          "operating_point": asdict(chosen),
                          "ceiling": None if best is None else asdict(best),
                          "curve": [asdict(p) for p in points]}, indent=2))
        return 0
    print(f"{len(pairs)} pairs, {rule_label(name, args.guards)}")
    print(format_curve(points))
    print(f"operating point {threshold:.4f}: precision {chosen.precision:.3f}, hit rate "
          f"{chosen.hit_rate:.3f}, false-hit rate {chosen.false_hit_rate:.4f}")
    if best is not None:
        print(f"ceiling with no false hit: hit rate {best.hit_rate:.3f} ({best.hits} served) "
              f"at threshold {best.threshold:.4f}")
    for group, label, n, served in by_group(pairs, outcomes, threshold):
        what = "paraphrases served" if label else "false hits"
        print(f"  {group}: {served} of {n} {what}")
    return 0


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    pairs = _pairs(args.pairs)
    tune, held_out = split(pairs, args.holdout) if args.holdout else (pairs, [])
    embedder = _embedder(args, settings)
    options = TrainOptions(precision=args.precision, min_hits=args.min_hits, l2=args.l2)
    with tempfile.TemporaryDirectory(prefix="cache-train-") as workdir:
        trained = asyncio.run(train_verifier(tune, embedder, embedder.space, Path(workdir),
                                             options, _names(args.pairs)))
    save(trained.verifier, args.out)
    v = trained.verifier
    print(f"wrote {args.out}: {v.model}/{v.dim}, {trained.candidates} candidate pairs of "
          f"{len(tune)}, threshold {v.threshold:.4f}")
    if trained.fit is not None:
        t = trained.fit.tune
        print(f"  out of fold: precision {t.precision:.3f}, hit rate {t.hit_rate:.3f} "
              f"(aimed at {args.precision:.3f}, reached {trained.fit.target_precision:.3f})")
    if held_out:
        h = point(_outcomes(held_out, embedder, True, args.out), v.threshold)
        print(f"  on {len(held_out)} held-out pairs: precision {h.precision:.3f}, hit rate "
              f"{h.hit_rate:.3f}, false-hit rate {h.false_hit_rate:.4f}")
    print(f'use it: [cache] verifier = "{args.out}"')
    return 0


def verifier_thresholds() -> list[float]:
    return [round(float(t), 3) for t in np.arange(0.50, 0.9901, 0.02)]


def format_curve(points: Sequence[Point]) -> str:
    """The curve as a table: ``served`` counts every pair answered from the cache, duplicates
    (``true-hits``) and not (``false-hits``)."""
    lines = ["threshold  precision  hit-rate  false-hit-rate  served  true-hits  false-hits"]
    for p in points:
        lines.append(f"{p.threshold:9.3f}  {p.precision:9.3f}  {p.hit_rate:8.3f}  "
                     f"{p.false_hit_rate:14.4f}  {p.hits + p.false_hits:6d}  {p.hits:9d}  "
                     f"{p.false_hits:10d}")
    return "\n".join(lines)
