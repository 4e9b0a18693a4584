"""The routes file: routes, their example utterances and tiers, and the fitted calibration.

A routes file is TOML::

    [[routes]]
    name = "code"
    description = "Writing, reviewing and debugging code."
    tier = "reasoning"
    cache = "exact"            # semantic | exact | off (default semantic)
    utterances = ["write a python function that ...", ...]

    [out_of_scope]             # optional: prompts no route should take (negative examples)
    utterances = ["what is the meaning of life", ...]

    [calibration]              # written by `gateway routes fit`
    threshold = 0.62
    ...

``load_routes`` validates it into a ``RouteSet`` and raises ``ConfigError`` naming the file and
the key (``routes.toml: routes[3].tier: ...``). ``render_routes`` writes a whole file (``routes
build``) and ``write_calibration`` replaces only the ``[calibration]`` table of an existing file,
keeping its comments. Touches only the files it is given.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.core.routing_settings import RoutingSettings, TierPlan, packaged_routes_file
from gateway.core.toml_table import ConfigError, Table, read_text

log = logging.getLogger(__name__)

CACHE_MODES = ("semantic", "exact", "off")
_NAME = re.compile(r"[!-~](?:[ -~]{0,98}[!-~])?")
"""Any label a data set uses (``reverted_card_payment?``): printable ASCII, no space at either
end, at most 100 characters, so that it fits a response header and a metric label as is."""
NAME_RULE = "1 to 100 printable ASCII characters, not starting or ending with a space"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a route, or None when it can."""
    return None if _NAME.fullmatch(name) else f"expected {NAME_RULE}, got {name!r}"
_CALIBRATION_HEADER = re.compile(r"^\s*\[\s*calibration\s*(\.[^\]]*)?\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


@dataclass(frozen=True, slots=True)
class Route:
    """One kind of prompt: where it goes and what it looks like."""

    name: str
    tier: str
    utterances: tuple[str, ...]
    description: str = ""
    cache: str = "semantic"


@dataclass(frozen=True, slots=True)
class Calibration:
    """The decision thresholds and the confidence model, as fitted by ``routes fit``.

    A prompt's best route is taken when its confidence reaches ``threshold`` (or the route's own
    entry in ``route_thresholds``) and its score leads the runner-up by ``margin``; a best score
    under ``in_scope`` means no route applies. ``blend`` weighs the linear head's log-probability
    against the nearest-example similarity in each route's score. ``weights`` and ``bias`` map
    (best score, margin, best log-probability) to a probability that the best route is right;
    without them the confidence is the linear head's probability.
    """

    threshold: float = 0.5
    margin: float = 0.0
    in_scope: float = 0.0
    blend: float = 0.1
    weights: tuple[float, float, float] | None = None
    bias: float = 0.0
    route_thresholds: Mapping[str, float] = field(default_factory=dict)
    target_precision: float | None = None
    model: str = ""
    fitted_on: str = ""

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_on)

    def threshold_for(self, route: str) -> float:
        return self.route_thresholds.get(route, self.threshold)


@dataclass(frozen=True, slots=True)
class RouteSet:
    """Every route of one file, in file order, and its calibration."""

    routes: tuple[Route, ...]
    calibration: Calibration
    source: str = "<memory>"
    out_of_scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.routes:
            raise ConfigError(f"{self.source}: routes: at least one route is required")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.routes)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)

    def with_calibration(self, calibration: Calibration) -> RouteSet:
        return replace(self, calibration=calibration)


def _route(t: Table, tiers: Collection[str] | None) -> Route:
    name = t.required("name", str)
    if not _NAME.fullmatch(name):
        raise t.fail("name", NAME_RULE)
    tier = t.required("tier", str)
    if tiers is not None and tier not in tiers:
        known = ", ".join(sorted(tiers)) or "none"
        raise ConfigError(f"{t.key('tier')}: no model serves tier {tier!r} (tiers: {known})")
    utterances = tuple(u.strip() for u in t.strings("utterances"))
    if not utterances:
        raise ConfigError(f"{t.key('utterances')}: a route needs at least one example utterance")
    for i, text in enumerate(utterances):
        if not text:
            raise ConfigError(f"{t.key('utterances')}[{i}]: an utterance must not be empty")
    route = Route(
        name=name,
        tier=tier,
        utterances=tuple(dict.fromkeys(utterances)),
        description=t.get("description", str, ""),
        cache=t.choice("cache", CACHE_MODES, "semantic"),
    )
    t.reject_unknown()
    return route


def _unit(t: Table, name: str, default: float) -> float:
    value = t.get(name, float, default)
    if not 0.0 <= value <= 1.0:
        raise t.fail(name, "a number from 0 to 1")
    return value


def _finite(t: Table, name: str, default: float) -> float:
    value = t.get(name, float, default)
    if not math.isfinite(value):
        raise t.fail(name, "a finite number")
    return value


def _weights(t: Table) -> tuple[float, float, float] | None:
    raw = t.optional("weights", list)
    if raw is None:
        return None
    if len(raw) != 3 or not all(isinstance(w, int | float) and not isinstance(w, bool)
                                for w in raw):
        raise t.fail("weights", "a list of 3 numbers")
    return (float(raw[0]), float(raw[1]), float(raw[2]))


def _route_thresholds(t: Table, names: Collection[str]) -> dict[str, float]:
    table = t.table("route_thresholds")
    out = {}
    for name in list(table.data):
        if name not in names:
            raise ConfigError(f"{table.key(name)}: no route named {name!r}")
        out[name] = _unit(table, name, 0.5)
    return out


def _calibration(t: Table, names: Collection[str]) -> Calibration:
    precision = t.optional("target_precision", float)
    calibration = Calibration(
        threshold=_unit(t, "threshold", 0.5),
        margin=_finite(t, "margin", 0.0),
        in_scope=_finite(t, "in_scope", 0.0),
        blend=t.non_negative("blend", 0.1),
        weights=_weights(t),
        bias=_finite(t, "bias", 0.0),
        route_thresholds=_route_thresholds(t, names),
        target_precision=precision,
        model=t.get("model", str, ""),
        fitted_on=t.get("fitted_on", str, ""),
    )
    t.reject_unknown()
    return calibration


def parse_routes(
    data: Mapping[str, object], *, tiers: Collection[str] | None = None, source: str = "<memory>"
) -> RouteSet:
    """Validate parsed TOML; ``tiers`` (when given) are the tiers a route may name."""
    root = Table(data)
    try:
        routes = tuple(_route(t, tiers) for t in root.tables("routes"))
        if not routes:
            raise ConfigError("routes: at least one [[routes]] table is required")
        _check_unique(routes)
        calibration = _calibration(root.table("calibration"), {r.name for r in routes})
        out_of_scope = _out_of_scope(root.table("out_of_scope"))
        root.get("version", int, 1)
        root.reject_unknown()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return RouteSet(routes, calibration, source, out_of_scope)


def _out_of_scope(t: Table) -> tuple[str, ...]:
    texts = tuple(u.strip() for u in t.strings("utterances"))
    for i, text in enumerate(texts):
        if not text:
            raise ConfigError(f"{t.key('utterances')}[{i}]: an utterance must not be empty")
    t.get("description", str, "")
    t.reject_unknown()
    return tuple(dict.fromkeys(texts))


def _check_unique(routes: Sequence[Route]) -> None:
    seen: dict[str, int] = {}
    owner: dict[str, str] = {}
    for i, route in enumerate(routes):
        if route.name in seen:
            first = seen[route.name]
            raise ConfigError(f"routes[{i}].name: {route.name!r} is already routes[{first}]")
        seen[route.name] = i
        for text in route.utterances:
            other = owner.setdefault(text.casefold(), route.name)
            if other != route.name:
                log.warning("utterance %r is in both %s and %s", text, other, route.name)


def load_routes(path: Path, *, tiers: Collection[str] | None = None) -> RouteSet:
    """Read and validate a routes file; ``ConfigError`` names the file and the key."""
    text = read_text(path, "the routes file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return parse_routes(data, tiers=tiers, source=str(path))


def load_configured_routes(
    settings: RoutingSettings, tiers: Collection[str], plan: TierPlan
) -> RouteSet:
    """The configured routes file, checked against the tiers the models serve.

    A file the operator names must only name served tiers. The packaged default names ``cheap``
    and ``reasoning``; where a gateway serves only one of them (or neither), the default's routes
    take the nearest served tier instead of stopping the start (logged).
    """
    if settings.routes_file != packaged_routes_file():
        return load_routes(settings.routes_file, tiers=tiers)
    routes = load_routes(settings.routes_file)
    moved = tuple(_nearest_tier(r, tiers, plan) for r in routes.routes)
    if moved != routes.routes:
        log.warning("the default routes name tiers no model serves; they go to %s instead",
                    ", ".join(sorted({r.tier for r in moved})))
    return replace(routes, routes=moved)


def _nearest_tier(route: Route, tiers: Collection[str], plan: TierPlan) -> Route:
    if route.tier in tiers:
        return route
    strongest = plan.order[-1] if plan.order else plan.default
    return replace(route, tier=plan.default if route.tier == "cheap" else strongest)


def _toml_str(text: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(text, ensure_ascii=False)


def _toml_float(value: float) -> str:
    return repr(round(value, 6))


def render_route(route: Route) -> str:
    lines = ["[[routes]]", f"name = {_toml_str(route.name)}"]
    if route.description:
        lines.append(f"description = {_toml_str(route.description)}")
    lines += [f"tier = {_toml_str(route.tier)}", f"cache = {_toml_str(route.cache)}"]
    lines.append("utterances = [")
    lines += [f"  {_toml_str(u)}," for u in route.utterances]
    lines.append("]")
    return "\n".join(lines) + "\n"


def render_calibration(c: Calibration) -> str:
    lines = ["[calibration]", "# Written by `gateway routes fit`; fit again after editing routes."]
    if c.fitted_on:
        lines.append(f"fitted_on = {_toml_str(c.fitted_on)}")
    if c.model:
        lines.append(f"model = {_toml_str(c.model)}")
    if c.target_precision is not None:
        lines.append(f"target_precision = {_toml_float(c.target_precision)}")
    for name in ("threshold", "margin", "in_scope", "blend", "bias"):
        lines.append(f"{name} = {_toml_float(getattr(c, name))}")
    if c.weights is not None:
        lines.append("weights = [" + ", ".join(_toml_float(w) for w in c.weights) + "]")
    if c.route_thresholds:
        lines += ["", "[calibration.route_thresholds]"]
        lines += [f"{_toml_str(k)} = {_toml_float(v)}" for k, v in c.route_thresholds.items()]
    return "\n".join(lines) + "\n"


def render_routes(route_set: RouteSet, header: str = "") -> str:
    """A whole routes file for ``route_set`` (``header`` becomes leading comment lines)."""
    parts = ["".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())]
    parts += [render_route(r) for r in route_set.routes]
    if route_set.out_of_scope:
        body = "".join(f"  {_toml_str(u)},\n" for u in route_set.out_of_scope)
        parts.append(f"[out_of_scope]\nutterances = [\n{body}]\n")
    parts.append(render_calibration(route_set.calibration))
    return "\n".join(p for p in parts if p)


def strip_calibration(text: str) -> str:
    """``text`` without its ``[calibration]`` (and ``[calibration.*]``) tables."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if _CALIBRATION_HEADER.match(line):
            skipping = True
        elif _ANY_HEADER.match(line):
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept).rstrip() + "\n"


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def write_calibration(path: Path, calibration: Calibration) -> RouteSet:
    """Replace the ``[calibration]`` of the routes file at ``path``, keeping everything else."""
    before = load_routes(path)
    text = strip_calibration(path.read_text("utf-8")) + "\n" + render_calibration(calibration)
    after = parse_routes(tomllib.loads(text), source=str(path))
    if (after.routes, after.out_of_scope) != (before.routes, before.out_of_scope):
        raise ConfigError(f"{path}: cannot rewrite [calibration] without changing the routes")
    write_text_atomically(path, text)
    return after
