"""The package's shape: no module over 600 lines, no import cycle between its modules.

A long module does more than one job, and a cycle means two modules cannot be understood (or
imported) one without the other. The imports are read from the source with :mod:`ast`, so
every import counts wherever it stands: at module level, under ``if TYPE_CHECKING:`` (a
type-only import still ties the two modules together) and inside a function (a lazy import
that dodges a cycle at import time is still a cycle).

An import's target is the most specific module it names: ``from .testing import _ledger`` is
an edge to ``icr_async.testing._ledger``; ``from . import errors`` to ``icr_async.errors``;
``from . import something`` where ``something`` is not a submodule, and ``import
icr_async.testing``, to the package's ``__init__``. The parent packages Python initialises
first are not counted: every submodule would otherwise be in a cycle with its ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

MAX_LINES = 600
# Found next to the tests, not by importing it: a cycle may make the package unimportable.
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "icr_async"


def find_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package at ``package_dir``, by dotted name (packages by their name)."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def long_modules(package_dir: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """The modules longer than ``limit`` lines, with their line counts."""
    counts = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in find_modules(package_dir).items()
    }
    return {name: count for name, count in counts.items() if count > limit}


def _resolve(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known: Mapping[str, Path]
) -> set[str]:
    # The package modules ``node`` (found in module ``name``) imports.
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        # A relative import counts from the package holding the module (a package's
        # __init__ is inside the package itself), one package up per extra dot.
        base = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    targets: set[str] = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in known:
            targets.add(submodule)
        elif source in known:
            targets.add(source)
    return targets


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Which package modules each package module imports, counting every import statement."""
    modules = find_modules(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _resolve(node, name, is_package, modules)
        # ``from . import VERSION`` in a package's own __init__ names itself: not a cycle.
        edges.discard(name)
        graph[name] = edges
    return graph


def _components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components, iteratively (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop(0)
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def _shortest_cycle(graph: Mapping[str, set[str]], members: list[str]) -> list[str]:
    # Breadth-first from the first member back to itself, staying inside the component.
    start = members[0]
    inside = set(members)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & inside):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{members} is not a cycle")  # pragma: no cover


def import_cycles(package_dir: Path) -> list[list[str]]:
    """One cycle per group of modules that import each other, as a chain ``[a, b, ..., a]``."""
    graph = import_graph(package_dir)
    return [_shortest_cycle(graph, members) for members in _components(graph) if len(members) > 1]


def _describe(package_dir: Path) -> str:
    graph = import_graph(package_dir)
    lines = []
    for members in _components(graph):
        if len(members) > 1:
            lines.append(" -> ".join(_shortest_cycle(graph, members)))
            if len(members) > 2:
                lines.append(f"    (all {len(members)} tied together: {', '.join(members)})")
    return "\n".join(lines)


# ------------------------------------------------------------------- the checks can fail


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_long_module_is_reported(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": '"""A package."""\n',
            "pkg/short.py": "x = 1\n" * MAX_LINES,
            "pkg/sub/long.py": "x = 1\n" * (MAX_LINES + 1),
        },
    )
    assert long_modules(package) == {"pkg.sub.long": MAX_LINES + 1}


def test_relative_imports_resolve_to_modules(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import f\nfrom . import VERSION\nfrom . import b\n",
            "pkg/a.py": "import os\nfrom . import _fork\nfrom .sub import c\n",
            "pkg/_fork.py": "import pkg.sub\n",
            "pkg/b.py": "from .sub.c import Y\nfrom pkg import a\n",
            "pkg/sub/__init__.py": "from . import c\nfrom .. import b\n",
            "pkg/sub/c.py": "from ..errors import E\nfrom .. import _fork\n",
            "pkg/errors.py": "E = 1\n",
        },
    )
    assert import_graph(package) == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg._fork", "pkg.sub.c"},
        "pkg._fork": {"pkg.sub"},
        "pkg.b": {"pkg.sub.c", "pkg.a"},
        "pkg.sub": {"pkg.sub.c", "pkg.b"},
        "pkg.sub.c": {"pkg.errors", "pkg._fork"},
        "pkg.errors": set(),
    }


def test_cycle_through_type_checking_and_lazy_imports_is_reported(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import run\n",
            "pkg/a.py": "def run():\n    from . import b\n    return b\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.c import Y\n"
            ),
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from ..a import run\nY = run\n",
            "pkg/ok.py": "from . import a\n",
        },
    )
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert _describe(package) == (
        "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a\n    (all 3 tied together: pkg.a, pkg.b, pkg.sub.c)"
    )


def test_each_separate_cycle_is_reported(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "from pkg.a import x\n",
            "pkg/c.py": "from .d import y\n",
            "pkg/d.py": "from . import c\n",
            "pkg/e.py": "from . import c\nfrom pkg import e\n",
        },
    )
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.d", "pkg.c"]]


def test_acyclic_package_has_no_cycle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import f\nfrom .b import g\n",
            "pkg/a.py": "from .b import g\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n",
            "pkg/c.py": "x = 1\n",
        },
    )
    assert import_cycles(package) == []


# -------------------------------------------------------------------- the real package


def test_real_package_is_read_whole() -> None:
    modules = find_modules(PACKAGE_DIR)
    # Subpackages and private modules are all seen, so the checks below cover them.
    assert {"icr_async", "icr_async.testing", "icr_async.contrib.redis"} <= set(modules)
    assert any(name.startswith("icr_async.testing._") for name in modules)
    assert "icr_async.testing._emulator" in import_graph(PACKAGE_DIR)["icr_async.testing"]


def test_no_module_is_over_the_line_limit() -> None:
    too_long = long_modules(PACKAGE_DIR)
    assert not too_long, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{name} ({count})" for name, count in sorted(too_long.items())
    )


def test_no_import_cycle() -> None:
    if import_cycles(PACKAGE_DIR):
        pytest.fail("import cycles between icr_async modules:\n" + _describe(PACKAGE_DIR))
