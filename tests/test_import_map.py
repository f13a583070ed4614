"""The package map: which package of ``idsync`` may import which.

Every module under ``daemon/idsync`` is parsed (not imported) and each import of
an idsync module is checked against ``MAP``: module-level, function-level and
``TYPE_CHECKING`` imports alike, ``from idsync import X`` included. A package
lower in the map never imports one above it, and neither packages nor modules
import each other in a cycle. CONTRIBUTING.md's "Package map" table states the
same map for readers; a test keeps the two equal.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "daemon"

# package -> the packages it may import, lowest first. A package is the first name
# after ``idsync.`` (``idsync.sync.recon`` is in ``sync``); ``idsync`` itself is the
# package's ``__init__.py`` (its version). "*" is every package listed before it.
MAP: Mapping[str, tuple[str, ...]] = {
    "idsync": (),
    "errors": (),
    "runtime": (),
    "spool": ("errors",),
    "log": ("idsync", "errors"),
    "keys": ("errors",),
    "query": ("errors",),
    "scripts": ("errors",),
    "crypto": ("errors",),
    "settings": ("errors", "keys"),
    "resource": ("errors", "query", "spool"),
    "stamps": ("errors",),
    "config": ("idsync", "errors", "keys", "query", "scripts", "crypto", "settings"),
    "store": ("idsync", "errors", "log", "query", "crypto", "resource", "stamps", "settings", "config"),
    "connectors": ("idsync", "errors", "log", "keys", "query", "spool", "resource", "stamps"),
    "resources": ("errors", "resource", "config", "store", "connectors"),
    "sync": ("idsync", "errors", "log", "query", "scripts", "spool", "resource", "settings", "config", "store",
             "resources"),
    "managed": ("errors", "runtime", "log", "query", "scripts", "crypto", "resource", "config", "store", "resources",
                "sync"),
    "status_file": ("idsync", "errors", "config", "store", "sync"),
    "api": ("idsync", "errors", "log", "query", "scripts", "resource", "settings", "config", "store", "resources",
            "sync", "managed"),
    "console": ("idsync", "errors", "log", "query", "resource", "settings", "config", "store", "resources", "sync",
                "managed", "api"),
    "cluster": ("errors", "settings", "store"),
    "daemon": ("idsync", "errors", "log", "settings", "config", "store", "resources", "sync", "managed",
               "status_file", "api", "console", "cluster"),
    "cli": ("*",),
    "__main__": ("cli",),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, ``idsync.sync.recon``
    target: str  # the imported module, ``idsync.store.links``
    line: int

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SOURCE / "idsync").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(known: Mapping[str, Path]) -> Iterator[Import]:
    """Every import of an idsync module, wherever it stands in the file."""
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                # ``from idsync import cli`` imports the module idsync.cli; ``from idsync
                # import __version__`` a name of idsync.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                if target == "idsync" or target.startswith("idsync."):
                    while target not in known and "." in target:
                        target = target.rpartition(".")[0]
                    yield Import(module, target, node.lineno)


def package_of(module: str) -> str:
    return "idsync" if module == "idsync" else module.split(".")[1]


def may_import(package: str) -> set[str]:
    may = MAP[package]
    return set(list(MAP)[: list(MAP).index(package)]) if "*" in may else set(may)


def allowed(importer: str, imported: str) -> bool:
    return importer == imported or imported in may_import(importer)


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: list[str], graph: Mapping[str, set[str]], edges: Mapping[tuple[str, str], Import]) -> str:
    """One cycle of a strongly connected component, as the imports that make it."""
    start, inside = component[0], set(component)
    came: dict[str, str] = {}
    todo = [start]
    while todo:  # breadth first from start, back to start
        node = todo.pop(0)
        for nxt in sorted(graph.get(node, set()) & inside):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                ring = [start, *reversed(path[:-1]), start]
                return "cycle: " + "; ".join(str(edges[a, b]) for a, b in itertools.pairwise(ring))
            if nxt not in came:
                came[nxt] = node
                todo.append(nxt)
    return f"cycle among {component}"


def test_every_package_is_on_the_map() -> None:
    """A new package must be placed on the map before it can be imported."""
    packages = {package_of(m) for m in modules()}
    assert sorted(packages - set(MAP)) == [], "add these packages to MAP and to CONTRIBUTING.md's Package map"
    assert sorted(set(MAP) - packages) == [], "these packages of MAP no longer exist"


def test_the_map_is_layered() -> None:
    """Each package may import only packages listed before it: the map has no cycle,
    so following it cannot create one."""
    upward = {p: sorted(may_import(p) - set(list(MAP)[: list(MAP).index(p)])) for p in MAP}
    assert {p: above for p, above in upward.items() if above} == {}
    assert cycles({p: may_import(p) for p in MAP}) == []


def test_no_package_imports_one_the_map_does_not_allow() -> None:
    """Lower layers never reach up: the store does not import connectors, the API not the
    daemon, configuration not the sync engine, and so on. Each offending import is named."""
    bad = [f"{i}: {package_of(i.module)} may not import {package_of(i.target)}"
           for i in imports(modules()) if not allowed(package_of(i.module), package_of(i.target))]
    assert bad == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], Import] = {}
    for i in imports(modules()):
        src, dst = package_of(i.module), package_of(i.target)
        if src != dst:
            graph.setdefault(src, set()).add(dst)
            edges.setdefault((src, dst), i)
    assert [describe(component, graph, edges) for component in cycles(graph)] == []


def test_no_import_cycle_between_modules() -> None:
    """Not even inside a package (an import that runs only for type checking counts too)."""
    graph: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], Import] = {}
    for i in imports(modules()):
        if i.module != i.target:
            graph.setdefault(i.module, set()).add(i.target)
            edges.setdefault((i.module, i.target), i)
    assert [describe(component, graph, edges) for component in cycles(graph)] == []


def test_the_package_does_not_ship_development_code() -> None:
    """Test helpers and demos live in devtools/idsync_dev, outside the wheel: nothing in
    idsync may import them."""
    bad = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{module} (line {node.lineno}) imports {n}" for n in names if n.split(".")[0] == "idsync_dev"]
    assert bad == []
    assert not [m for m in modules() if m.rpartition(".")[2] in ("demo", "testing")]


def test_contributing_states_the_same_map() -> None:
    """CONTRIBUTING.md's "Package map" lists each package once with what it may import,
    as MAP does."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text.split("\n## Package map\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, tuple[str, ...]] = {}
    for line in section.splitlines():
        row = re.fullmatch(r"\|\s*`([\w]+)`\s*\|[^|]*\|([^|]*)\|", line.strip())
        if row:
            may = row.group(2).strip()
            documented[row.group(1)] = ("*",) if may == "anything above" else tuple(re.findall(r"`(\w+)`", may))
    assert documented == dict(MAP)
    assert list(documented) == list(MAP), "the table lists the packages in the map's order, lowest first"
