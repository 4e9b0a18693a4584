"""The package layout's layers (DESIGN.md's map), read from every module's imports with ``ast``.

From the bottom: ``core`` imports no other gateway package; the capabilities (``routing``,
``cache``, ``tenants``, ``upstream``, ``observability``) import ``core`` and not one another,
except for the arrows in ``ALLOWED_ACROSS``; ``pipeline`` composes the capabilities; ``api``
composes the pipeline; ``app`` and ``__main__`` sit on top. No module imports one above its
layer, and no import cycle joins two modules. Imports inside functions count too: a lazy import
still ties the modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

CORE = "core"
CAPABILITIES = frozenset({"routing", "cache", "tenants", "upstream", "observability"})
RANKS = {CORE: 0, **dict.fromkeys(CAPABILITIES, 1), "pipeline": 2, "api": 3, "app": 4,
         "__main__": 4}

# Capability -> what of the other capabilities it may import (a package or a module under
# ``gateway``), and why.
ALLOWED_ACROSS: Mapping[str, tuple[str, ...]] = {
    # Metrics and the dashboard show the tenants' keys, store and ledger, and upstream health.
    "observability": ("tenants", "upstream"),
    # The prompt's embedding call is counted and timed in the metrics.
    "routing": ("observability.metrics",),
}

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_graph(root: Path = GATEWAY) -> Graph:
    """Every gateway module -> the gateway modules it imports (a submodule when it names one)."""
    files = {module_name(p): p for p in root.rglob("*.py")}
    graph: Graph = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in files else node.module)
        graph[name] = {t for t in targets if t.startswith("gateway.")}
    return graph


def layer(module: str) -> str:
    """The layer a module belongs to: the package right under ``gateway``, or app/__main__."""
    return module.split(".")[1]


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        if module == "gateway":
            continue
        source = layer(module)
        if source not in RANKS:
            found.append(f"{module}: gateway/ holds only app, __main__ and the layer packages")
            continue
        for target in sorted(targets):
            found.extend(_arrow_problem(module, source, target))
    return found


def _arrow_problem(module: str, source: str, target: str) -> list[str]:
    dest = layer(target)
    if dest == source:
        return []
    if dest not in RANKS or RANKS[dest] > RANKS[source]:
        return [f"{module} -> {target}: imports above its layer"]
    if RANKS[dest] < RANKS[source] or source not in CAPABILITIES:
        return []
    inside = target.removeprefix("gateway.")
    if any(inside == p or inside.startswith(p + ".") for p in ALLOWED_ACROSS.get(source, ())):
        return []
    return [f"{module} -> {target}: one capability reaching into another"]


def reachable(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles: each group of modules that reach one another, once."""
    reach = {node: reachable(graph, node) for node in graph}
    groups = {frozenset(m for m in reach[node] if node in reach.get(m, ()))
              for node in graph if node in reach[node]}
    return sorted(sorted(group) for group in groups)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return read_graph()


def test_the_graph_sees_the_imports_of_every_layer(graph: Graph) -> None:
    assert {layer(m) for m in graph if m != "gateway"} == set(RANKS)
    assert "gateway.core.answer" in graph["gateway.upstream.failover"]


def test_no_module_imports_above_its_layer(graph: Graph) -> None:
    assert layer_violations(graph) == []


def test_core_imports_no_other_gateway_package(graph: Graph) -> None:
    reaching_out = {m: sorted(t for t in ts if layer(t) != CORE)
                    for m, ts in graph.items() if m.startswith("gateway.core")}
    assert {m: ts for m, ts in reaching_out.items() if ts} == {}


def test_no_import_cycle_joins_two_modules(graph: Graph) -> None:
    assert cycles(graph) == []


def test_an_upward_import_is_reported() -> None:
    planted = {"gateway.core.chat": {"gateway.pipeline.dispatch"},
               "gateway.cache.replay": {"gateway.api.chat"}}
    assert layer_violations(planted) == [
        "gateway.cache.replay -> gateway.api.chat: imports above its layer",
        "gateway.core.chat -> gateway.pipeline.dispatch: imports above its layer",
    ]


def test_a_capability_reaching_into_another_is_reported_unless_allowed() -> None:
    planted = {"gateway.cache.replay": {"gateway.upstream.providers.openai"},
               "gateway.observability.metrics": {"gateway.tenants.ledger"}}
    assert layer_violations(planted) == [
        "gateway.cache.replay -> gateway.upstream.providers.openai: "
        "one capability reaching into another",
    ]


def test_the_entry_point_may_import_the_app() -> None:
    assert layer_violations({"gateway.__main__": {"gateway.app"}}) == []


def test_a_new_module_at_the_top_level_is_reported() -> None:
    assert layer_violations({"gateway.helpers": set()}) == [
        "gateway.helpers: gateway/ holds only app, __main__ and the layer packages"]


def test_a_cycle_between_two_modules_is_reported() -> None:
    planted = {"gateway.cache.questions": {"gateway.cache.text_features"},
               "gateway.cache.text_features": {"gateway.cache.questions", "gateway.core.chat"},
               "gateway.core.chat": set()}
    assert cycles(planted) == [["gateway.cache.questions", "gateway.cache.text_features"]]
