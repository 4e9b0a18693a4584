"""The ``gateway routes check|fit|eval|build`` commands.

    gateway routes check [--routes FILE]
    gateway routes fit   --data FILE --target-precision P [--coverage C] [--routes FILE]
    gateway routes eval  --data FILE [--routes FILE] [--json]
    gateway routes build --data FILE --out ROUTES [--per-route N] [--tier ROUTE=TIER ...]
                         [--default-tier T]

``add_commands`` registers them; each leaf sets ``handler(args, settings) -> exit status`` like
the other command groups. ``--routes`` defaults to the configured routes file. Embeddings are
computed in this process with the configured model (``--model-dir`` overrides it) and cached
under the routing cache directory (``--cache``), utterances and labelled data in separate files.
Reads the files it is given; ``fit`` rewrites the routes file's ``[calibration]``, ``build``
writes ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from embedder_worker.settings import EmbedderSettings
from gateway.core.config import Settings
from gateway.core.notices import publish_once
from gateway.core.routing_settings import RoutingSettings, packaged_routes_file, tier_plan
from gateway.core.toml_table import ConfigError
from gateway.routing.calibrate import (
    FitOptions,
    evaluate,
    fit_calibration,
    format_report,
    read_examples,
    route_indices,
    score_examples,
)
from gateway.routing.classifier import FloatArray, IntArray
from gateway.routing.router import Router, build_router, embed_routes
from gateway.routing.routes import (
    Calibration,
    Route,
    RouteSet,
    load_configured_routes,
    name_problem,
    render_routes,
    write_calibration,
    write_text_atomically,
)
from gateway.routing.vectors import InProcessEmbedder, VectorCache, embed_cached

Handler = Callable[[argparse.Namespace, Settings], int]
Common = Callable[[argparse.ArgumentParser], None]
DEFAULT_MODEL_DIR = Path("models/all-MiniLM-L6-v2")


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: Common | None = None
) -> None:
    """Register ``routes check|fit|eval|build``; ``common`` adds shared options (``--config``)."""
    routes = subparsers.add_parser("routes", help="check, fit, evaluate and build routes files")
    sub = routes.add_subparsers(dest="routes_command", required=True)
    leaf(sub, "check", "validate a routes file without starting", run_check, common)
    fit = leaf(sub, "fit", "fit the thresholds on labelled examples", run_fit, common)
    _data(fit)
    fit.add_argument("--target-precision", type=_unit, required=True, metavar="P",
                     help="precision of confident decisions to aim for (0..1)")
    fit.add_argument("--coverage", type=_unit, default=0.95, metavar="C",
                     help="share of in-scope examples kept in scope (default 0.95)")
    evaluation = leaf(sub, "eval", "measure routing on labelled examples", run_eval, common)
    _data(evaluation)
    evaluation.add_argument("--json", action="store_true", help="print the report as JSON")
    build = leaf(sub, "build", "make a routes file from labelled examples", run_build, common)
    _data(build)
    build.add_argument("--out", type=Path, required=True, help="the routes file to write")
    build.add_argument("--per-route", type=int, default=None, metavar="N",
                       help="at most N utterances per route (a seeded random sample)")
    build.add_argument("--tier", action="append", default=[], metavar="ROUTE=TIER",
                       help="the tier of one route (repeatable)")
    build.add_argument("--default-tier", default=None, metavar="T",
                       help="the tier of every route without --tier")
    build.add_argument("--seed", type=int, default=0, help="seed of the --per-route sample")
    build.add_argument("--force", action="store_true", help="overwrite --out")


def leaf(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
          handler: Handler, common: Common | None) -> argparse.ArgumentParser:
    """A ``gateway routes|learn`` command with the workspace options every one of them takes."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--routes", type=Path, default=None,
                        help="routes file (default: [routing] routes_file)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="vector cache directory (default: [routing] cache_dir)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="embedding model directory (default: [embedder] model_dir)")
    if common is not None:
        common(parser)
    parser.set_defaults(handler=handler)
    return parser


def _data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help='labelled JSON lines: {"text": ..., "route": name or null}')


def _unit(value: str) -> float:
    number = float(value)
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError("expected a number above 0 and at most 1")
    return number


def routing_settings(settings: Settings) -> RoutingSettings:
    """The configured routing settings (defaults until the config carries ``[routing]``)."""
    found = getattr(settings, "routing", None)
    if isinstance(found, RoutingSettings):
        return found
    return RoutingSettings(routes_file=packaged_routes_file())


def embedder_for(ws: Workspace) -> InProcessEmbedder:
    """The configured embedding model in this process, with the workers' options."""
    from gateway.routing.context import embedder_options

    options = embedder_options(ws.embedder) if ws.embedder is not None else {}
    return InProcessEmbedder(ws.model_dir, **options)


@dataclass(frozen=True, slots=True)
class Workspace:
    """What every command works on: the routes file and where vectors are cached."""

    routes_path: Path
    routes: RouteSet
    cache_dir: Path
    model_dir: Path
    routing: RoutingSettings
    tiers: tuple[str, ...]
    embedder: EmbedderSettings | None


def workspace(args: argparse.Namespace, settings: Settings) -> Workspace:
    routing = routing_settings(settings)
    if args.routes is not None:
        routing = replace(routing, routes_file=args.routes)
    tiers = tuple(dict.fromkeys(m.tier for m in settings.models))
    path = routing.routes_file
    model_dir = args.model_dir or (
        settings.embedder.model_dir if settings.embedder else DEFAULT_MODEL_DIR
    )
    return Workspace(
        routes_path=path,
        routes=load_configured_routes(routing, tiers, tier_plan(routing, tiers)),
        cache_dir=args.cache or routing.cache_path(settings.server.data_dir),
        model_dir=model_dir,
        routing=routing,
        tiers=tiers,
        embedder=settings.embedder,
    )


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    ws = workspace(args, settings)
    plan = tier_plan(ws.routing, ws.tiers)
    routes = ws.routes
    print(f"{ws.routes_path}: {len(routes.routes)} routes, "
          f"{sum(len(r.utterances) for r in routes.routes)} utterances; tiers {plan.order}, "
          f"default {plan.default}")
    for r in routes.routes:
        note = "  (few examples: 25 or more route better)" if len(r.utterances) < 25 else ""
        print(f"  {r.name:<24} -> {r.tier:<10} cache={r.cache:<8} "
              f"{len(r.utterances):>4} utterances{note}")
    c = routes.calibration
    print("calibration: " + (f"fitted on {c.fitted_on}" if c.fitted
                             else "not fitted (run `gateway routes fit`)"))
    return 0


async def router_for(ws: Workspace, embedder: InProcessEmbedder) -> Router:
    """The router the gateway would build from the workspace's routes file."""
    cache = VectorCache.load(ws.cache_dir / "vectors.npz", embedder.name)
    vectors = await embed_routes(ws.routes, cache, embedder.embed)
    return build_router(
        ws.routes, vectors, tier_plan(ws.routing, ws.tiers), model=embedder.name,
        cache_dir=ws.cache_dir, ambiguity=ws.routing.ambiguity_policy,
    )


async def data_vectors(
    ws: Workspace, embedder: InProcessEmbedder, texts: Sequence[str]
) -> FloatArray:
    """Vectors of labelled texts, through the workspace's data vector cache."""
    cache = VectorCache.load(ws.cache_dir / "data-vectors.npz", embedder.name)
    return await embed_cached(texts, cache, embedder.embed)


async def _labelled(
    args: argparse.Namespace, ws: Workspace
) -> tuple[InProcessEmbedder, Router, IntArray, FloatArray]:
    """The embedder, the router, and the ``--data`` examples' true routes and vectors."""
    embedder = embedder_for(ws)
    router = await router_for(ws, embedder)
    examples = read_examples(args.data)
    truth = route_indices(examples, ws.routes.names, str(args.data))
    vectors = await data_vectors(ws, embedder, [e.text for e in examples])
    return embedder, router, truth, vectors


async def _fit(args: argparse.Namespace, ws: Workspace) -> Calibration:
    embedder, router, truth, vectors = await _labelled(args, ws)
    assert router.classifier is not None
    scored = score_examples(router.classifier, vectors, truth, len(ws.routes.routes))
    options = FitOptions(target_precision=args.target_precision, coverage=args.coverage)
    return fit_calibration(scored, ws.routes.names, options, model=embedder.name,
                           source=args.data.name)


def run_fit(args: argparse.Namespace, settings: Settings) -> int:
    ws = workspace(args, settings)
    calibration = asyncio.run(_fit(args, ws))
    write_calibration(ws.routes_path, calibration)
    _notify(settings, ws.routes_path)
    print(f"{ws.routes_path}: [calibration] written: threshold {calibration.threshold}, "
          f"margin {calibration.margin}, in_scope {calibration.in_scope}, "
          f"blend {calibration.blend}, {len(calibration.route_thresholds)} route thresholds")
    return 0


async def _eval(args: argparse.Namespace, ws: Workspace) -> str:
    _, router, truth, vectors = await _labelled(args, ws)
    report = evaluate(router, vectors, truth)
    return json.dumps(asdict(report), indent=2) if args.json else format_report(report)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_eval(args, workspace(args, settings))))
    return 0


def _tiers(args: argparse.Namespace) -> dict[str, str]:
    tiers = {}
    for item in args.tier:
        route, sep, tier = item.partition("=")
        if not sep or not route or not tier:
            raise ConfigError(f"--tier {item!r}: expected ROUTE=TIER")
        tiers[route] = tier
    return tiers


def routes_from_examples(
    examples: Sequence[tuple[str, str | None]], *, per_route: int | None, tiers: dict[str, str],
    default_tier: str | None, seed: int = 0, source: str = "<examples>",
) -> RouteSet:
    """A route per labelled route name; out-of-scope examples become ``[out_of_scope]``."""
    by_route: dict[str, list[str]] = {}
    outside: list[str] = []
    for text, route in examples:
        if route is None:
            outside.append(text)
        else:
            by_route.setdefault(route, []).append(text)
    unknown = sorted(set(tiers) - set(by_route))
    if unknown:
        raise ConfigError(f"--tier: no examples for route {unknown[0]!r}")
    for name in by_route:
        if (problem := name_problem(name)) is not None:
            raise ConfigError(f"route {name!r} cannot be a route name: {problem}")
    rng = random.Random(seed)
    routes = []
    for name, texts in by_route.items():
        tier = tiers.get(name, default_tier)
        if tier is None:
            raise ConfigError(f"route {name!r} has no tier: give --tier {name}=T or --default-tier")
        unique = list(dict.fromkeys(texts))
        if per_route is not None and len(unique) > per_route:
            keep = set(rng.sample(range(len(unique)), per_route))
            unique = [t for i, t in enumerate(unique) if i in keep]
        routes.append(Route(name=name, tier=tier, utterances=tuple(unique),
                            description=name.replace("_", " ")))
    return RouteSet(tuple(routes), Calibration(), source, tuple(dict.fromkeys(outside)))


def run_build(args: argparse.Namespace, settings: Settings) -> int:
    if args.out.exists() and not args.force:
        raise ConfigError(f"{args.out}: already exists (use --force to overwrite)")
    if args.per_route is not None and args.per_route < 1:
        raise ConfigError("--per-route: expected an integer of 1 or more")
    examples = [(e.text, e.route) for e in read_examples(args.data)]
    route_set = routes_from_examples(
        examples, per_route=args.per_route, tiers=_tiers(args), default_tier=args.default_tier,
        seed=args.seed, source=str(args.out),
    )
    known = {m.tier for m in settings.models}
    for r in route_set.routes:
        if r.tier not in known:
            raise ConfigError(f"route {r.name!r}: no model serves tier {r.tier!r}")
    header = (f"Built by `gateway routes build` from {args.data.name}"
              + (f", at most {args.per_route} utterances per route" if args.per_route else "")
              + ".\nRun `gateway routes fit` on held-out labelled examples to calibrate it.")
    write_text_atomically(args.out, render_routes(route_set, header))
    _notify(settings, args.out)
    print(f"{args.out}: {len(route_set.routes)} routes, "
          f"{sum(len(r.utterances) for r in route_set.routes)} utterances")
    return 0


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML configuration file (default: the embedded default)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.routing.cli routes ...``: the commands without the main CLI."""
    return standalone(add_commands, argv)


def standalone(add: Callable[..., None], argv: Sequence[str] | None) -> int:
    """Run the commands ``add`` registers without the main CLI (``python -m ...``)."""
    from gateway.core.config import load

    parser = argparse.ArgumentParser(prog="gateway")
    add(parser.add_subparsers(dest="command", required=True), _config_option)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args, load(args.config)))
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())


def _notify(settings: Settings, path: Path) -> None:
    """With ``[cluster] redis_url``: tell the running replicas to reload their routes."""
    if settings.cluster.redis_url is None:
        return
    if asyncio.run(publish_once(settings.cluster, "routes", {"file": str(path)})):
        print(f"{path}: replicas notified to reload their routes")
    else:
        print("warning: replicas not notified (Redis unavailable); they reload a changed "
              "routes file at their next re-read", file=sys.stderr)
