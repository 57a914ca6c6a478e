"""Import direction between the packages, checked statically, and the torch-free timing path, checked live.

Layering (dependencies point one way): ``devices`` imports no other project package; ``algorithms``
imports ``devices`` only; ``learning`` imports ``devices`` only (never ``sim``); ``sim`` may import
all three. Only ``learning`` imports torch (and the libraries built on it) at module level, so a
timing-only run never loads it. Inside ``sim`` no two modules import each other at module level.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_helpers import REPO

PACKAGES = ("devices", "algorithms", "learning", "sim")
ALLOWED = {
    "devices": set(),
    "algorithms": {"devices"},
    "learning": {"devices"},
    "sim": {"devices", "algorithms", "learning"},
}
"""Project packages each package may import (besides itself), at module or function level."""
TORCH_STACK = ("torch", "transformers", "peft")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module name, at module level?) for every import statement in ``path``.

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` (``name`` may be a module); imports
    under ``if``/``try`` at module level count as module level, those in a function or lambda do not.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, top))
            out.extend((f"{base}.{a.name}", top) for a in node.names)
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), True)
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


IMPORTS = {m: _imports(p, m) for m, p in _modules().items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_downward(package):
    bad = sorted({(m, name) for m, imps in IMPORTS.items() if _top(m) == package for name, _ in imps
                  if _top(name) in PACKAGES and _top(name) != package and _top(name) not in ALLOWED[package]})
    assert not bad, f"{package} imports what it may not: {bad}"


def test_only_learning_imports_torch_at_module_level():
    bad = sorted({(m, name) for m, imps in IMPORTS.items() if _top(m) != "learning" for name, top in imps
                  if top and _top(name) in TORCH_STACK})
    assert not bad, f"module-level torch imports outside learning/: {bad}"


def test_no_import_cycle_inside_sim():
    graph = {m: {n for n, top in imps if top and n in IMPORTS and n != m and _top(n) == "sim"}
             for m, imps in IMPORTS.items() if _top(m) == "sim"}
    cycle = _find_cycle(graph)
    assert cycle is None, f"module-level import cycle in sim/: {' -> '.join(cycle)}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        path.pop()
        state[u] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checker_sees_cycles_and_function_level_imports():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    loader = dict(IMPORTS["sim.loader"])
    assert loader.get("algorithms.registry") is False  # imported inside validate()


def test_sim_and_devices_do_not_import_torch():
    code = "import sim, devices, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_timing_only_run_does_not_import_torch():
    code = ("import sys; import sim.runner, sim.loader, algorithms; "
            "sc, b = sim.loader.load_scenario('scenarios/quickstart.yaml', "
            "['training.rounds=2', 'output.plots=false']); "
            "sim.runner.simulate(sc, b); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
