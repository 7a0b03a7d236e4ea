"""The package's import graph: no cycle between modules, and data flowing one way between layers.

Read from the source (``ast``): a module-level import is an edge; an import inside a function is
listed separately, and each such module must say why it imports late (start-up speed: the command
line builds its parsers without torch; or an optional extra such as Ray).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Source folder of each installed package (pyproject's package-dir).
PACKAGES = {"composition_gym": ROOT / "composition_gym", "composition_gym.agents": ROOT / "agents",
            "composition_gym.benchmarks": ROOT / "benchmarks"}
#: Layers in the order data flows; a module may import its own layer or an earlier one.
LAYERS = ("composition_gym", "composition_gym.agents", "composition_gym.benchmarks")
#: Core modules above the agents in the flow: the command line dispatches to every layer by name,
#: never by import.
ENTRY_POINTS = {"composition_gym.cli"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("composition_gym.agents") and folder != PACKAGES["composition_gym.agents"]:
                continue
            out[name] = path
    return {n: p for n, p in out.items() if not (n.startswith("composition_gym.") and PACKAGES["composition_gym"] in
                                                   p.parents and n.split(".")[1] in ("agents", "benchmarks"))}


def _target(node: ast.ImportFrom | ast.Import, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    # ``from pkg import mod`` imports the module ``pkg.mod``; ``from pkg import name`` the package.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


MODULES = set()


def edges(late: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (``late``: inside functions instead)."""
    mods = modules()
    MODULES.update(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in (set(nodes) - set(top) if late else top):
            for target in _target(node, name, path.name == "__init__.py"):
                if target in mods and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    return max(i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + "."))


def test_no_import_cycle_at_module_level():
    assert cycles(edges()) == []


def test_no_cycle_even_counting_late_imports():
    graph = edges()
    for module, targets in edges(late=True).items():
        graph[module] |= targets
    assert cycles(graph) == []


def test_data_flows_one_way_between_layers():
    graph = edges()
    for module, targets in graph.items():
        for target in targets:
            assert _layer(target) <= _layer(module) or module in ENTRY_POINTS, f"{module} imports {target}"


def test_every_module_that_imports_late_says_why():
    for module, targets in edges(late=True).items():
        if not targets:
            continue
        text = modules()[module].read_text().lower()
        assert any(word in text for word in ("start-up", "startup", "optional extra", "cycle")), \
            f"{module} imports {sorted(targets)} inside functions without saying why"


def test_no_private_name_is_imported_across_modules():
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("composition_gym"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{name} imports private {private} from {node.module}"
