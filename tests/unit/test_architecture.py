"""The layers of docs/architecture.md, checked against every import in src/s3batch.

A package may import only packages of a lower layer (and itself). Imports inside functions and
under TYPE_CHECKING count too: a type-only import that points outward is still a dependency a
reader has to follow the wrong way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "s3batch"

#: Package (or top-level module) → layer. Lower layers never import higher ones. The same table
#: is drawn in docs/architecture.md.
LAYERS: dict[str, int] = {
    "errors": 0,
    "retry": 0,
    "idle": 0,
    "heap": 0,
    "types": 0,
    "domain": 1,
    "settings": 1,
    "storage": 2,
    "store": 2,
    "functions": 3,
    "operations": 4,
    "engines": 5,
    "service": 6,
    "pipelines": 6,
    "eventloop": 6,
    "api": 7,
    "client": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported s3batch package, line) for every import of one module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "s3batch" and len(parts) > 1:
                yield parts[1], node.lineno


def _violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        package = _package(path)
        for target, line in _imports(path):
            if target != package and LAYERS[target] >= LAYERS[package]:
                found.append(f"{path.relative_to(SRC)}:{line}: {package} (layer {LAYERS[package]}) "
                             f"imports {target} (layer {LAYERS[target]})")  # fmt: skip
    return found


def test_every_package_has_a_layer() -> None:
    packages = {_package(path) for path in SRC.rglob("*.py")}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_dependencies_point_inward() -> None:
    assert _violations() == []


def test_the_check_sees_an_outward_import(tmp_path: Path) -> None:
    """The rule would catch a domain module importing storage."""
    module = tmp_path / "m.py"
    module.write_text("from s3batch.storage.base import ObjectStore\n")
    assert list(_imports(module)) == [("storage", 1)]
    assert LAYERS["storage"] >= LAYERS["domain"]


@pytest.mark.parametrize("package", ["domain"])
def test_the_domain_imports_nothing_of_s3batch_but_errors(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        assert {target for target, _ in _imports(path)} <= {"domain", "errors", "types"}, path
