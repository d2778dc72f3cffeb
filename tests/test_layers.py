"""The package's layers point one way: each package imports only the ones below it.

Every import in ``src/tidings`` is read from the source (function-level and
``TYPE_CHECKING`` imports too, since a type checker follows them), mapped to
the package it lands in, and checked against the table below, which is the map
drawn in ``docs/architecture.md``. The table itself must have no cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tidings"

# package -> the packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "events": {"errors"},
    "log": {"errors"},
    "core": {"errors", "events", "log"},
    "backends": {"errors", "events", "log", "core"},
    "streams": {"errors", "events", "core"},
    "server": {"errors", "events", "log", "core", "backends"},
    "client": {"errors", "events"},
    "app": {"errors", "events", "log", "core", "backends", "client", "streams"},
    # local nats-server and hub processes (tidings cluster, the NATS benchmarks)
    "cluster": set(),
    "benchmarks": {
        "errors", "events", "log", "core", "backends", "server", "client", "app", "streams",
        "cluster",
    },
    "cli": {
        "errors", "events", "log", "core", "backends", "server", "client", "app", "benchmarks",
        "streams", "cluster",
    },
    # the public modules at the top: the API re-exported, the test harness, verify()
    "tidings": {"errors", "events", "client", "app"},
    "testing": {"app"},
    "webhooks": {"core"},
    "__main__": {"cli"},
}

TOP_MODULES = {"__init__", "__main__", "errors", "testing", "webhooks"}


def _package_of(module: str) -> str:
    """``tidings.core.hub`` -> ``core``; ``tidings`` -> ``tidings``."""
    parts = module.split(".")
    assert parts[0] == "tidings", module
    return parts[1] if len(parts) > 1 else "tidings"


def _source_package(path: Path) -> str:
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        return "tidings" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            found += [(node.lineno, n) for n in names if n.split(".")[0] == "tidings"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write it absolute")
            if node.module and node.module.split(".")[0] == "tidings":
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_the_table_has_no_cycle() -> None:
    graphlib.TopologicalSorter(ALLOWED).static_order()  # raises CycleError


def test_only_the_public_modules_sit_at_the_top() -> None:
    loose = {p.stem for p in SRC.glob("*.py")}
    assert loose <= TOP_MODULES, f"modules outside a package: {sorted(loose - TOP_MODULES)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    source = _source_package(path)
    assert source in ALLOWED, f"{path.relative_to(SRC)}: package {source!r} is not in the map"
    wrong = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for line, module in _imports(path)
        if (target := _package_of(module)) != source and target not in ALLOWED[source]
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_package_opens_with_a_docstring() -> None:
    for init in SRC.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) >= 3, f"{init.relative_to(SRC)} needs a docstring"
        assert "mport" in doc, f"{init.relative_to(SRC)}: say what it imports and what imports it"


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        source = _source_package(path)
        for _, module in _imports(path):
            target = _package_of(module)
            if target != source:
                graph.setdefault(source, set()).add(target)
    graphlib.TopologicalSorter(graph).static_order()
