"""The package's import graph: no module imports itself round a circle, and nothing imports upward.

The graph is built from the source with ``ast`` and counts imports inside functions too (about half of
visent's imports are there, and a cycle through one never shows up as an import-time error). The layers,
bottom to top (docs/architecture.md):

    0  core, perturb, data, rewards, intervals, io,  pure math, data, verifiers, shared helpers,
       configs                                       the shipped method configs
    1  models                                        family adapters, loading, tiny models
    2  trainer, eval                                 training on TRL; evaluation (neither imports the other)
    3  viz                                           pictures and inspection of saved responses
    4  lab                                           a user of the library: warm-start, RL runs, study, demo
    5  cli                                           the ``visent`` command

A module may import its own package, any package of a lower layer, and (layer 0 only) its neighbours on
the same floor as long as no package cycle forms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS: dict[str, int] = {
    "visent": 0,  # the package's own __init__ (a docstring and a version)
    "core": 0,
    "perturb": 0,
    "image_views": 0,  # raw-image views (PAPO blackout, CPPO views) applied before the processor
    "data": 0,
    "rewards": 0,
    "intervals": 0,
    "io": 0,
    "configs": 0,  # package data (the method YAMLs) and the name -> file lookup
    "models": 1,
    "trainer": 2,
    "eval": 2,
    "viz": 3,
    "lab": 4,
    "cli": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "visent").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``visent`` module ``module`` imports, wherever the import statement sits."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from visent.data import synthetic` imports the submodule; `from x import name` the module x.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules) if name.startswith("visent") else None
            if target and target != module:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_finds_a_cycle_and_nothing_else():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    # visent.models.tokenizer reads its default corpus inside a function, on purpose (it renders images).
    assert "visent.data.synthetic" in graph["visent.models.tokenizer"]


def test_every_package_has_a_layer():
    unknown = sorted({_package(m) for m in _graph()} - set(LAYERS))
    assert not unknown, f"place {unknown} in LAYERS (and in docs/architecture.md)"


def test_no_module_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(map(str, cycles))


def test_no_package_cycles():
    packages: dict[str, set[str]] = {}
    for a, targets in _graph().items():
        for b in targets:
            if _package(a) != _package(b):
                packages.setdefault(_package(a), set()).add(_package(b))
    assert not _cycles(packages)


@pytest.mark.parametrize("floor", sorted(set(LAYERS.values())))
def test_nothing_imports_upward_or_sideways(floor):
    bad = []
    for a, targets in sorted(_graph().items()):
        pa = _package(a)
        if LAYERS.get(pa) != floor:
            continue
        for b in sorted(targets):
            pb = _package(b)
            same_floor_ok = LAYERS[pb] == 0 and floor == 0
            if pa != pb and not (LAYERS[pb] < floor or same_floor_ok):
                bad.append(f"{a} -> {b} (layer {floor} -> {LAYERS[pb]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)
