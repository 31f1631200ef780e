"""The import graph: no cycles at import time, and the layering the architecture promises.

Read from the sources with ``ast`` (nothing is imported), so a test failure names the file and
line. An import counts at import time when it runs while the module loads: at module level,
in a class body, or under a module-level ``if``/``try``/``with`` — but not under
``if TYPE_CHECKING:`` (never runs) and not inside a function (runs on call, after every module
involved has loaded).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.layout import ROOT, source_modules


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    at_load: bool  # runs while the importer loads (not deferred to a function call)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it runs at load time; TYPE_CHECKING blocks left out."""

    def visit(nodes: list[ast.stmt], at_load: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, at_load
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse, at_load)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(node.body, False)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        stmts = [c for c in children if isinstance(c, ast.stmt)]
                        stmts += [s for c in children if not isinstance(c, ast.stmt) for s in c.body]
                        yield from visit(stmts, at_load)

    return visit(tree.body, True)


def _edges() -> list[Edge]:
    modules = source_modules()
    edges = []
    for importer, path in modules.items():
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node, at_load in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: resolve against the importer's package
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from package import module` imports that module; `from module import name`, the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in dict.fromkeys(targets):
                if target in modules and target != importer:
                    edges.append(Edge(importer, target, node.lineno, at_load))
    return edges


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_no_import_cycles_at_load_time() -> None:
    edges = [e for e in _edges() if e.at_load]
    cycles = _cycles(edges)
    detail = [
        f"{e.importer} -> {e.imported} (line {e.line})"
        for cycle in cycles
        for e in edges
        if e.importer in cycle and e.imported in cycle
    ]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


# The architecture's layers (ARCHITECTURE.md, README "Where things live"): who may import whom,
# at any time (a deferred import inside a function is still a dependency).
FORBIDDEN = [
    ("hybrid_assistant.retrieval", "hybrid_assistant.server"),
    ("hybrid_assistant.retrieval", "hybrid_assistant.adapters"),
    ("hybrid_assistant.retrieval", "hybrid_assistant.eval"),
    ("hybrid_assistant.adapters", "hybrid_assistant.server"),
    # adapters -> retrieval is allowed one way: the context and RAFT recipes cut passages with the
    # retrieval chunker and lay them out with retrieval.prompt_context, the layout the server
    # serves, so training and serving cannot drift. Retrieval never needs adapters.
    ("hybrid_assistant.adapters", "hybrid_assistant.eval"),
    # The eval measures what clients get: it reaches the model only through the gRPC API.
    ("hybrid_assistant.eval", "hybrid_assistant.server"),
    # The light client (contract, client, process launcher) needs grpcio and protobuf only.
    ("hybrid_assistant.client", "hybrid_assistant.server"),
    ("hybrid_assistant.v1", "hybrid_assistant.server"),
    # Test fixtures are for tests and benchmarks, never for serving.
    ("hybrid_assistant.server", "hybrid_assistant.testing"),
]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("importer", "imported"), FORBIDDEN, ids=lambda p: p.removeprefix("hybrid_assistant.")
)
def test_layers(importer: str, imported: str) -> None:
    bad = [
        f"{e.importer} imports {e.imported} ({source_modules()[e.importer].relative_to(ROOT)}:{e.line})"
        for e in _edges()
        if _within(e.importer, importer) and _within(e.imported, imported)
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_cycles_and_deferred_imports(tmp_path: Path) -> None:
    """The graph code itself: a cycle through module level is found, one through a function is not."""
    source = "import a\nif TYPE_CHECKING:\n    import c\ndef f():\n    import d\nclass K:\n    import e\n"
    found = [(n.names[0].name, at_load) for n, at_load in _imports(ast.parse(source))]
    assert found == [("a", True), ("d", False), ("e", True)]
    edges = [
        Edge("x", "y", 1, True),
        Edge("y", "z", 1, True),
        Edge("z", "x", 1, True),
        Edge("z", "w", 1, True),
    ]
    assert _cycles(edges) == [["x", "y", "z"]]
    assert _cycles(edges[:2]) == []
