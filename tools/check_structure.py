"""Structure rules the linters do not cover, for every module of ``seesaw/`` and ``simulator/``:
at most 500 lines, a docstring that opens it, no private (``_name``) name imported from another
module of ours, and no import cycle between modules (imports inside functions count too).

An import ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
a package's ``__init__`` is its own node, and importing a submodule does not count as importing
its parent package. Prints one line per problem; exit 1 if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("seesaw", "simulator")
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def private_imports(name: str, path: Path) -> list[str]:
    """``from seesaw.x import _name`` lines of ``path``: a private name used outside its module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
            found += [f"{path.relative_to(ROOT)}: imports the private name {a.name} from {node.module or '.'}"
                      for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def problems() -> list[str]:
    """Every broken rule, one line each."""
    mods = modules()
    found = []
    for name, path in mods.items():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_LINES:
            found.append(f"{path.relative_to(ROOT)}: {n} lines (at most {MAX_LINES}: split it by concept)")
        if not ast.get_docstring(ast.parse(text, str(path))):
            found.append(f"{path.relative_to(ROOT)}: no module docstring (say what it models and assumes)")
        found += private_imports(name, path)
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    found += ["import cycle: " + " <-> ".join(comp) for comp in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"check_structure: {len(modules())} modules, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
