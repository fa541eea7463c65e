"""The layers of ARCHITECTURE.md hold: no upward import, no import circle (issue 16).

Both read the real import graph of the non-test code (grimp, the graph import-linter builds),
lazy imports inside functions included, so a shortcut taken "just inside this function" fails
here as it would fail `make lint`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compare", "pipelines", "corpora", "cli")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import circle among modules (Tarjan's strongly connected components > 1 module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_circle() -> None:
    graph = grimp.build_graph(*PACKAGES)
    # A package's __init__ importing its own submodules is not a circle of meaning; we keep
    # every __init__ empty of imports anyway, so the graph is checked as it is.
    assert _cycles(graph) == []


def test_a_circle_is_found_when_there_is_one() -> None:
    """The checker itself: an added edge that closes a loop is reported."""
    graph = grimp.build_graph(*PACKAGES)
    graph.add_import(importer="compare.core.types", imported="compare.run.spec")
    assert any("compare.core.types" in c and "compare.run.spec" in c for c in _cycles(graph))


def test_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: layers point down, pipelines and
    corpora see only compare.core."""
    lint = Path(sys.executable).with_name("lint-imports")
    got = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-2000:]
    assert "0 broken" in got.stdout
