"""Model size and compute: parameter count and GFLOPs of one forward pass (ultralytics-thop).

thop counts multiply-accumulates (MACs); `count_flops` returns FLOPs = 2 x MACs (one multiply plus one
add), in units of 1e9 (GFLOPs), the figure YOLO tooling prints. ResNet-18 at 224 px: 1.82 GMACs = 3.6 GFLOPs.
Layers thop has no rule for (activations, for instance) count nothing; convs and linears dominate.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def count_flops(model: nn.Module, imgsz: int, batch: int = 1) -> float | None:
    """GFLOPs (2 x MACs / 1e9) of one forward pass of `batch` images of imgsz x imgsz pixels.

    Runs on a deep copy, so the caller's model gets no hooks, counters or mode change. Returns None,
    never 0, when the model cannot be counted (thop missing or failing, a forward pass that raises).
    """
    try:
        import thop
        import torch

        counted = copy.deepcopy(model)
        p = next(counted.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        x = torch.zeros(batch, 3, imgsz, imgsz, device=device, dtype=dtype)
        macs, _ = thop.profile(counted, inputs=(x,), verbose=False)
    except Exception as e:  # unavailable is a valid answer; a made-up number is not
        log.debug("FLOPs not counted: %s: %s", type(e).__name__, e)
        return None
    macs = float(macs)
    if not math.isfinite(macs) or macs <= 0:
        return None
    return 2 * macs / 1e9


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters once, buffers never)."""
    from optkit.models.params import count_params as _count_params

    return _count_params(model)
