"""Structure checks of ``seesaw.engine``: no import cycles (counting imports inside functions), no
private name imported from another module, every module under 500 lines.

Run as a script to print the import cycles: ``python tests/test_engine_imports.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "seesaw" / "engine"
PACKAGE = "seesaw.engine"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    return {f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE: p for p in sorted(ENGINE.glob("*.py"))}


def _imports(path: Path):
    """(imported module, names) for every import statement of ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports (``from seesaw.engine import x`` -> x)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for target, names in _imports(path):
            if target == PACKAGE:
                hits = [f"{PACKAGE}.{n}" for n in names if f"{PACKAGE}.{n}" in mods] or [PACKAGE]
            elif target in mods:
                hits = [target]
            else:
                continue
            graph[mod].update(h for h in hits if h != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
    return sorted(out)


def private_imports() -> list[str]:
    """``module: from X import _name`` for every private name imported from another module."""
    found = []
    for mod, path in _modules().items():
        for target, names in _imports(path):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    found.append(f"{mod}: from {target} import {n}")
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_private_names_imported():
    assert private_imports() == []


def test_modules_are_small():
    big = {p.name: n for p in ENGINE.glob("*.py") if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert big == {}


def test_every_module_has_a_docstring():
    assert [p.name for p in ENGINE.glob("*.py") if not ast.get_docstring(ast.parse(p.read_text()))] == []


if __name__ == "__main__":
    found = cycles(import_graph())
    for comp in found:
        print("cycle:", " <-> ".join(m.removeprefix(PACKAGE + ".") for m in comp))
    for line in private_imports():
        print("private import:", line)
    print(f"{len(found)} import cycle(s) in {PACKAGE}")
    sys.exit(1 if found else 0)
