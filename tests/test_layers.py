"""Layers point down only: no module imports from a layer above its own (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import polymodal

LAYERS = [  # top to bottom; a module may import its own layer and the ones below
    ["cli", "__main__"],
    ["demo"],
    ["serve", "export", "index"],
    ["evaluate"],
    ["train"],
    ["predictor", "onnx_backend", "inference"],
    ["models.model", "models.transfer", "models.precompute"],
    ["tasks"],
    ["models.encoders", "models.fusion", "models", "losses"],
    ["data"],
    ["metrics"],
    ["config", "config_reference", "models.architectures"],  # named configs, read by config
    ["io", "errors", "progress", ""],  # "" is the package itself: polymodal/__init__.py
]
SOURCE = Path(polymodal.__file__).parent


def layer_of(module: str) -> int:
    """The layer of ``polymodal.X``: its longest matching entry (a package covers its modules)."""
    name = module.removeprefix("polymodal").removeprefix(".")
    best = max(
        (
            (len(entry), index)
            for index, entries in enumerate(LAYERS)
            for entry in entries
            if name == entry or (entry and name.startswith(entry + "."))
        ),
        default=None,
    )
    assert best is not None, f"{module} is in no layer: add it to LAYERS and DESIGN.md"
    return best[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """The polymodal modules a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "polymodal"}


def test_every_import_points_down():
    upward = []
    for module, path in sorted(modules().items()):
        own = layer_of(module)
        for imported in sorted(imports(path)):
            if layer_of(imported) < own:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_the_layers_are_the_design_s():
    below = layer_of  # a larger index is a lower layer
    assert below("polymodal.metrics.vqa") > below("polymodal.inference")  # metrics run no model
    assert below("polymodal.tasks.classify") > below("polymodal.models.model")
    assert below("polymodal.models.encoders.base") > below("polymodal.tasks.base")
    assert below("polymodal.train.trainer") < below("polymodal.inference")
    assert below("polymodal") == below("polymodal.io") == len(LAYERS) - 1
