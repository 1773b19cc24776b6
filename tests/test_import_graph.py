"""No import cycle inside seqzoo: the layers import downwards only.

The graph is built from the source (AST), with every import -- also those inside
functions, which run later but still tie two modules together -- except those under
``if TYPE_CHECKING:``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``; importing ``a.b`` does not count as importing the package ``a``
(its ``__init__`` re-exports would otherwise make every package a cycle).

One idiom is allowed: a function importing its *own ancestor package* to fill that package's
registry (``backbones.base.get_backbone_class`` importing ``seqzoo.backbones`` so that every
family has registered). Python always initialises a module's ancestors before the module,
so such an import can never see a half-built module; any other lazy import can.
"""

from __future__ import annotations

import ast
from pathlib import Path

import seqzoo

ROOT = Path(seqzoo.__file__).resolve().parent


def module_files(root: Path = ROOT) -> dict[str, Path]:
    files = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            lazy = _in_function(node, parents)
            edges |= {t for t in targets
                      if t in files and t != name and not (lazy and name.startswith(t + "."))}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete cycle through a component, for the failure message."""
    start, members = component[0], set(component)
    seen, trail = {start}, [start]
    node = start
    while True:
        nxt = sorted(graph[node] & members)
        back = [n for n in nxt if n == start]
        if back and len(trail) > 1:
            return " -> ".join([*trail, start])
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return " <-> ".join(component)
        node = fresh[0]
        seen.add(node)
        trail.append(node)


def test_the_graph_sees_function_level_imports_and_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.low import x\n")
    (pkg / "sub" / "low.py").write_text("x = 1\n")
    (pkg / "a.py").write_text("from pkg.sub import low\n\ndef f():\n    from pkg import b\n")
    (pkg / "sub" / "registry.py").write_text("def load():\n    import pkg.sub\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.sub\n"
                              "from .a import f\n")
    graph = import_graph(module_files(pkg))
    assert graph["pkg.a"] == {"pkg.sub.low", "pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}, "relative import resolved, TYPE_CHECKING import left out"
    assert graph["pkg.sub.registry"] == set(), "a function loading its own package's registry is allowed"
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_seqzoo():
    graph = import_graph(module_files())
    assert len(graph) > 30
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_path(graph, c) for c in found)
