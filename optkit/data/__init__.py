"""Datasets: ImageFolder, the built-in synthetic `builtin:shapes`, transforms and loaders.

Names are resolved lazily so `import optkit.data` stays light (no torch until a loader is built).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "resolve_data": "loader",
    "DataSpec": "loader",
    "EpochSampler": "loader",
    "build_train_loader": "loader",
    "build_val_loader": "loader",
    "default_workers": "loader",
    "builtin_root": "shapes",
    "generate_shapes": "shapes",
    "BUILTINS": "shapes",
    "ImageFolder": "folder",
    "TrainTransform": "transforms",
    "ValTransform": "transforms",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optkit.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"optkit.data.{_EXPORTS[name]}"), name)
