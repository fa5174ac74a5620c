"""The layers and their import rules (docs/architecture.md, "Layers"), read from the source with ``ast``.

Every import counts, at module level or inside a function, except those under ``if TYPE_CHECKING:``
(annotations only, never executed). Contracts at the bottom; the engine and the executor are siblings
that never import each other; only the application layer (``app``, ``cli`` and the ``replay`` that
drives the whole loop) wires them together; no two modules import each other, directly or around a
cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "executor")

# layer -> the layers it may import (itself always)
RULES: dict[str, set[str]] = {
    "contracts": set(),
    "transport": {"contracts"},
    "sqlmodel": {"contracts"},
    "allocation": {"contracts", "sqlmodel"},
    "pgwire": {"contracts"},
    "engine": {"contracts", "transport", "sqlmodel"},
    "executor": {"contracts", "transport", "sqlmodel"},
    "sim": {"contracts"},
    "migrate": {"contracts", "transport", "sqlmodel", "engine"},
    "status": {"contracts", "migrate"},
    "app": {
        "contracts",
        "transport",
        "sqlmodel",
        "allocation",
        "pgwire",
        "engine",
        "executor",
        "sim",
        "migrate",
        "status",
    },
    "replay": {"contracts", "transport", "sqlmodel", "allocation", "pgwire", "engine", "executor", "sim", "app"},
    "cli": {
        "contracts",
        "transport",
        "sqlmodel",
        "allocation",
        "pgwire",
        "engine",
        "executor",
        "sim",
        "migrate",
        "status",
        "app",
        "replay",
    },
}
TOP = {"pipeline": "cli"}  # pipeline/__init__.py and __main__.py (python -m pipeline) start the CLI


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "executor":
        return "executor"
    if len(parts) == 1 or parts[1] in ("__main__",):
        return TOP["pipeline"]
    return parts[1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imports(module: str) -> Iterator[tuple[str, int]]:
    """``(imported module of ours, line)`` for every runtime import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield _existing(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else _existing(base)), node.lineno


def _existing(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_the_layout_has_the_documented_layers():
    layers = {layer(m) for m in MODULES}
    assert layers == set(RULES), (
        f"layers without a rule: {layers - set(RULES)}; rules without a layer: {set(RULES) - layers}"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_what_its_layer_may(module):
    mine = layer(module)
    for target, line in imports(module):
        theirs = layer(target)
        assert theirs == mine or theirs in RULES[mine], (
            f"{MODULES[module].relative_to(ROOT)}:{line}: the {mine} layer may not import {target} ({theirs})"
        )


def test_engine_and_executor_never_import_each_other():
    for module in MODULES:
        for target, line in imports(module):
            pair = {layer(module), layer(target)}
            assert pair != {"engine", "executor"}, f"{module}:{line} imports {target}"


def test_no_import_cycles():
    graph = {m: {t for t, _ in imports(m) if t != m} for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def test_modules_stay_small():
    for path in MODULES.values():
        assert len(path.read_text().splitlines()) < 650, f"{path} is getting too long"
