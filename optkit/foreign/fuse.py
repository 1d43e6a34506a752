"""Fused foreign modules in the layout their own tools expect.

optkit's fuse puts an `nn.Identity` where a folded BatchNorm was. YOLOv5's and Ultralytics' `Conv` blocks
fuse differently: they delete `.bn` and point `forward` at `forward_fuse`, and their loaders call
`model.fuse()` again on every file they read, which folds every `Conv` that still has a `.bn` and would
fail on an Identity. So a block that has a `forward_fuse` method gets their convention instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def yolo_fused_layout_(model: nn.Module, pairs: list[str]) -> int:
    """In place, for each fused pair "<layer> + <parent>.bn" whose parent has `forward_fuse`: delete the
    parent's `bn` (an Identity now) and make `forward_fuse` its forward. Returns how many blocks changed."""
    from torch import nn

    changed = 0
    for pair in pairs:
        _, _, bn_name = pair.partition(" + ")
        parent_name, _, attr = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if attr != "bn" or not callable(getattr(parent, "forward_fuse", None)):
            continue
        if not isinstance(getattr(parent, "bn", None), nn.Identity):
            continue
        delattr(parent, "bn")
        parent.forward = parent.forward_fuse  # what YOLOv5 / Ultralytics Model.fuse() does
        changed += 1
    return changed
