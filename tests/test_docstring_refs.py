"""Every module path a docstring or comment names exists, so moved modules leave no stale pointers.

Two kinds of reference are checked in every module of ``connectors/``, ``integrity/`` and
``flows/``:

* a dotted path that starts with a project package (``integrity.engine.pipeline``,
  ``integrity.checks.registry.BUILTIN``) anywhere in a docstring or a comment: its longest
  importable prefix must be a module and the rest attributes of it;
* a Sphinx role (``:mod:``, ``:func:``, ``:class:``, ...): absolute, or relative to the module,
  its package, or a class of the module (``:meth:`drain``` inside a class's docstring).
"""
from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("connectors", "integrity", "flows")
#: dotted names that are not module paths: Prefect event names, and a placeholder in prose
NOT_MODULES = ("integrity.scan.", "integrity.shard.", "integrity.x")

_PATH = re.compile(r"(?<![\w./-])((?:connectors|integrity|flows)(?:\.[A-Za-z_]\w*)+)")
_ROLE = re.compile(r":(?:mod|func|class|data|meth|attr|exc):`~?([\w.]+)`")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in TOP:
        for f in sorted((ROOT / top).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), f))
    return out


def resolves(ref: str) -> bool:
    """Whether ``ref`` names an importable module or an attribute of one."""
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):  # a dataclass field without a default is an annotation only
                return attr in getattr(obj, "__annotations__", {}) and attr == parts[-1]
            obj = getattr(obj, attr)
        return True
    return False


def _texts(source: str) -> list[str]:
    """The docstrings and comments of a module."""
    tree = ast.parse(source)
    docs = [ast.get_docstring(n) or "" for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return docs + [line.split("#", 1)[1] for line in source.splitlines() if "#" in line]


def _role_resolves(ref: str, module: str, path: Path, source: str) -> bool:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    head = ref.split(".")[0]
    if head in TOP:
        return resolves(ref)
    if hasattr(builtins, head) or resolves(ref) or resolves(f"{module}.{ref}") or resolves(f"{package}.{ref}"):
        return True
    # a method, attribute or field of a class of the module (``:meth:`drain```, ``:attr:`Hits.order```)
    return re.search(rf"(?m)^\s*(?:def |class )?(?:self\.)?{re.escape(ref.split('.')[-1])}\b\s*[(:=]", source) is not None


@pytest.mark.parametrize("module,path", _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_module_paths_in_docstrings_exist(module: str, path: Path):
    source = path.read_text(encoding="utf-8")
    stale = set()
    for text in _texts(source):
        for ref in _PATH.findall(text):
            if not ref.startswith(NOT_MODULES) and not resolves(ref):
                stale.add(ref)
    for ref in _ROLE.findall(source):
        if not _role_resolves(ref.rstrip("."), module, path, source):
            stale.add(ref)
    assert not stale, f"{path.relative_to(ROOT)} names what does not exist: {sorted(stale)}"
