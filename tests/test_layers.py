"""Imports point down the layers of docs/architecture.md ("Layers"): each module imports only from its own
layer or a lower one, counting every import statement in the file (inside functions and TYPE_CHECKING
blocks too). The table below is the one place, besides that document, where the layers are written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "optkit"

# module or package (dotted, without "optkit.") -> layer; the longest matching prefix wins
LAYERS: dict[str, int] = {
    "": 0,  # optkit/__init__.py
    "errors": 0,
    "io": 0,
    "device": 0,
    "threads": 0,
    "formats": 0,
    "limits": 0,
    "report.progress": 0,
    "report.console": 0,  # the stdout/stderr consoles, which the progress display draws on
    "models": 1,
    "data": 1,
    "sparse": 1,
    "onnxrt": 1,
    "ovrt": 1,
    "transforms": 1,
    "foreign.scan": 1,
    "checkpoint": 2,
    "measure": 3,
    "tasks": 3,
    "stages": 3,
    "quant": 3,
    "train": 3,
    "foreign": 3,
    "pictures": 3,
    "workflows": 4,
    "report": 5,
    "cli": 6,
    "__main__": 6,
}
NAMES = {0: "foundation", 1: "parts", 2: "checkpoint", 3: "library", 4: "workflows", 5: "report", 6: "cli"}


def layer_of(dotted: str) -> int:
    """The layer of `optkit.<dotted>` (a module or a name imported from a package)."""
    parts = dotted.split(".") if dotted else []
    for n in range(len(parts), -1, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"optkit.{dotted} has no layer in tests/test_layers.py")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def optkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name under optkit) of every import of optkit in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from optkit.report import progress` imports the module optkit.report.progress
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "optkit" or name.startswith("optkit."):
                found.append((node.lineno, name.removeprefix("optkit").removeprefix(".")))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    here = layer_of(module_name(path))
    upward = [
        f"line {line}: optkit.{name} (layer {layer_of(name)} {NAMES[layer_of(name)]})"
        for line, name in optkit_imports(path)
        if layer_of(name) > here
    ]
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {here} {NAMES[here]}) imports upward: {upward}"


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


def test_the_check_finds_an_upward_import(tmp_path):
    """The parser sees imports inside functions and TYPE_CHECKING blocks."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from optkit.cli.app import app\n"
        "def f():\n    import optkit.workflows.inputs\n    from optkit.report import progress\n"
    )
    names = [name for _, name in optkit_imports(source)]
    assert names == ["cli.app.app", "workflows.inputs", "report.progress"]
    assert [layer_of(n) for n in names] == [6, 4, 0]
