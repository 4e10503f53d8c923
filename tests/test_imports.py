"""The import graph of the project's own modules: no cycles, and the layering the README states.

Built from the source with ``ast`` (nothing is imported), so a cycle or a forbidden import is
found even in a module no other test loads. Imports inside functions count as edges too: a
lazy import still ties two concepts together.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "sim", "driving", "robot", "ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["steer", *parts])


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports (``from steer.x import y`` counts ``steer.x.y`` when it is a module)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # The deepest project module the name refers to.
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    # A lazy (in-function) import that the project has: the console's export stage.
    assert any(m.startswith("steer.agent") for m in graph["steer.ops.stages"])
    assert "steer.robot.errors" in graph["steer.robot.spec"]


def test_no_import_cycles_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package, forbidden", [
    ("steer.agent", ("steer.ops",)),
    ("steer.sim", ("steer.agent", "steer.ops", "steer.driving", "steer.robot")),
    ("steer.driving", ("steer.agent", "steer.ops", "steer.sim", "steer.robot")),
    # robot stands alone (a robot installs it without the training stack); agent/ and ops/ may use it.
    ("steer.robot", ("steer.agent", "steer.ops", "steer.driving")),
])
def test_layering(package, forbidden):
    bad = sorted((a, b) for a, deps in import_graph().items() if a == package or a.startswith(package + ".")
                 for b in deps if any(b == f or b.startswith(f + ".") for f in forbidden))
    assert not bad, f"{package} must not import {forbidden}: {bad}"


def test_agent_reaches_robot_only_through_its_torch_free_contracts():
    allowed = {"steer.robot", "steer.robot.spec", "steer.robot.errors"}
    bad = sorted((a, b) for a, deps in import_graph().items() if a.startswith("steer.agent")
                 for b in deps if b.startswith("steer.robot") and b not in allowed)
    assert not bad, f"agent/ may import only {sorted(allowed)} from robot/: {bad}"


def test_robot_never_imports_torch():
    bad = []
    for name, path in _modules().items():
        if name.startswith("steer.robot"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [(name, n) for n in names if n.split(".")[0] in ("torch", "stable_baselines3")]
    assert not bad, bad
