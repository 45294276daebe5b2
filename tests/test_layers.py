"""The package layers import only downward, and no package imports back into one that imports it.

Every module of ``connectors/``, ``integrity/`` and ``flows/`` is parsed (not
imported), each ``import`` and ``from ... import`` (module level or inside a
function, type-only ones included) is resolved to the project module it names,
and two rules are checked:

* **layers**: a module imports only modules of its own layer or of a lower one
  (:data:`LAYERS`, lowest first);
* **package cycles**: the graph of imports between packages (a module's package
  is the folder it lives in; a package and the packages nested in it count as
  one) has no cycle, so every package can be read and tested from the bottom up.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("connectors", "integrity", "flows")

#: lowest first; a module belongs to the layer of the longest prefix that names it
LAYERS: tuple[str, ...] = (
    "connectors",          # storage and formats, the normalized record schema
    "integrity.ledger",    # the SQLite ledger and run manifests
    "integrity.analysis",  # pure libraries: pixels, embeddings, dedup, history, profiles
    "integrity.checks",    # the Check contract, its family bases, one module per check
    "integrity.policy",    # the policy file, validated against the checks
    "integrity.report",    # the HTML report of a run directory
    "integrity.engine",    # the stages of a scan, quarantine, secret masking, outputs
    "integrity.api",       # the Python API for notebooks (scan a DataFrame or a path)
    "integrity.console",   # the ops console on the ledger (release and restore through the engine)
    "flows",               # Prefect orchestration and the CLI
)
#: the package roots themselves hold nothing but their docstring / re-exports of their own layer
UNLAYERED = ("integrity",)


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the top packages."""
    out: dict[str, Path] = {}
    for top in TOP:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that the module ``name`` (file ``path``) imports."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules and "." in t:  # ``import a.b.c`` of a name inside a module
                t = t.rsplit(".", 1)[0]
            if t in modules and t != name:
                found.add(t)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int | None:
    best = None
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(LAYERS[best]):
                best = i
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b (layer x imports layer y)"`` for every import from a lower layer into a higher one."""
    bad = []
    for mod, targets in sorted(graph.items()):
        low = layer_of(mod)
        if low is None:
            assert mod in UNLAYERED, f"{mod} is in no layer: add its package to LAYERS"
            continue
        for t in sorted(targets):
            high = layer_of(t)
            if high is not None and high > low:
                bad.append(f"{mod} -> {t} ({LAYERS[low]} imports {LAYERS[high]})")
    return bad


def packages(root: Path) -> dict[str, str]:
    """Module -> its package (the folder it lives in; a package's ``__init__`` is the package itself)."""
    return {m: m if p.name == "__init__.py" else m.rsplit(".", 1)[0] for m, p in project_modules(root).items()}


def nested(a: str, b: str) -> bool:
    """Whether one package is the other or lies inside it: a package is made of its
    subpackages (``integrity.report`` renders with ``integrity.report.sections``, which
    build on ``integrity.report.model``), so imports between them are not a cycle."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def package_cycles(graph: dict[str, set[str]], root: Path) -> list[list[str]]:
    """Strongly connected groups (of two or more packages) of the package import graph."""
    pkg = packages(root)
    edges: dict[str, set[str]] = {p: set() for p in pkg.values()}
    for m, targets in graph.items():
        edges[pkg[m]].update(pkg[t] for t in targets if not nested(pkg[t], pkg[m]))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is a few dozen packages
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def cycle_edges(group: list[str], graph: dict[str, set[str]], root: Path) -> list[str]:
    """The module imports that make up a package cycle, to name in the failure."""
    members, pkg = set(group), packages(root)
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                  if pkg[m] in members and pkg[t] in members and not nested(pkg[m], pkg[t]))


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(import_graph(ROOT))
    assert not bad, "imports from a lower layer into a higher one:\n  " + "\n  ".join(bad)


def test_no_package_cycle():
    graph = import_graph(ROOT)
    cycles = package_cycles(graph, ROOT)
    assert not cycles, "package cycles:\n" + "\n".join(
        f"  {' <-> '.join(g)}: " + "; ".join(cycle_edges(g, graph, ROOT)) for g in cycles)


def test_every_module_is_in_a_layer_and_the_graph_is_real():
    graph = import_graph(ROOT)
    assert all(layer_of(m) is not None or m in UNLAYERED for m in graph)
    # the walker resolves the forms the code uses: ``from pkg import module``, relative and lazy imports
    assert "integrity.analysis.label_triggers.lexical" in graph["integrity.checks.poison_trigger"]
    assert "connectors.schema" in graph["connectors.readers"]
    assert "integrity.report.render" in graph["integrity.engine.pipeline"]  # imported inside a function


def test_no_prefect_below_flows():
    for name, path in project_modules(ROOT).items():
        if not name.startswith("flows"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
            assert not [n for n in names if n.split(".")[0] == "prefect"], f"{name} imports Prefect"


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """A miniature project: connectors <- integrity.analysis <- integrity.checks, all downward."""
    files = {
        "connectors/__init__.py": "",
        "connectors/schema.py": "X = 1\n",
        "integrity/__init__.py": "",
        "integrity/analysis/__init__.py": "",
        "integrity/analysis/images.py": "from connectors.schema import X\n",
        "integrity/checks/__init__.py": "",
        "integrity/checks/base.py": "from integrity.analysis import images\n",
        "flows/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_finds_an_upward_import_and_a_cycle(fake_tree: Path):
    assert upward_imports(import_graph(fake_tree)) == []
    assert package_cycles(import_graph(fake_tree), fake_tree) == []
    # a pixel library that reaches back up for the check base (what integrity/images.py used to do)
    (fake_tree / "integrity/analysis/images.py").write_text(
        "from connectors.schema import X\n\ndef late():\n    from ..checks.base import Check\n")
    graph = import_graph(fake_tree)
    assert upward_imports(graph) == [
        "integrity.analysis.images -> integrity.checks.base (integrity.analysis imports integrity.checks)"]
    assert package_cycles(graph, fake_tree) == [["integrity.analysis", "integrity.checks"]]
