"""Model size and compute: parameter count and GFLOPs of one forward pass (ultralytics-thop).

thop counts multiply-accumulates (MACs); `count_flops` returns FLOPs = 2 x MACs (one multiply plus one
add), in units of 1e9 (GFLOPs), the figure YOLO tooling prints. ResNet-18 at 224 px: 1.82 GMACs = 3.6 GFLOPs.
Layers thop has no rule for (activations, for instance) count nothing; convs and linears dominate.

What ultralytics-thop 2.x counts, in MACs (the rules `optkit.measure.onnx_flops` reproduces on ONNX graphs):
Conv: output elements x input channels per group x kernel area (bias not counted); ConvTranspose: input
elements x output channels per group x kernel area; Linear: output elements x in_features; BatchNorm /
LayerNorm / GroupNorm / InstanceNorm: 2 per input element, 4 when affine; AdaptiveAvgPool: one per pooled
input plus one per output; AvgPool: one per window input plus one per output; PReLU: 1 per element;
Softmax: 3n-1 per row; Upsample: 0 (nearest) / 11 (bilinear) per output; ReLU, ReLU6, LeakyReLU, max pools,
dropout, identity, flatten: 0; SiLU, Hardswish, Sigmoid: no rule (0); functional matmul / bmm / einsum
outside a counted module: output elements x contracted size; other functional ops (add, cat, mul): 0.

`count_flops_check` is an independent count with torch's FlopCounterMode (aten-level: conv, mm, addmm,
bmm, attention; already in FLOPs, 2 per MAC), used to cross-check thop.
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

        counted = copy.deepcopy(model)
        x = _zeros_input(counted, imgsz, batch)
        macs, _ = thop.profile(counted, inputs=(x,), verbose=False)
    except Exception as e:  # unavailable is a valid answer; a made-up number is not
        log.debug("FLOPs not counted: %s: %s", type(e).__name__, e)
        return None
    macs = float(macs)
    if not math.isfinite(macs) or macs <= 0:
        return None
    return 2 * macs / 1e9


def count_flops_by_layer(
    model: nn.Module, imgsz: int, batch: int = 1
) -> tuple[float, dict[str, float]] | None:
    """thop's GFLOPs of one forward pass (the same figure as `count_flops`) and its split over the leaf
    modules: {module name: GFLOPs}, summed over every call of a module. None when it cannot be counted."""
    try:
        import thop

        counted = copy.deepcopy(model)
        x = _zeros_input(counted, imgsz, batch)
        macs, _, tree = thop.profile(counted, inputs=(x,), verbose=False, ret_layer_info=True)
    except Exception as e:  # unavailable, never a made-up number
        log.debug("FLOPs not counted: %s: %s", type(e).__name__, e)
        return None
    macs = float(macs)
    if not math.isfinite(macs) or macs <= 0:
        return None
    layers: dict[str, float] = {}

    def walk(node: dict, prefix: str) -> None:  # thop's tree: {child: (MACs, params, {grandchild: ...})}
        for name, (ops, _params, children) in node.items():
            if children:
                walk(children, f"{prefix}{name}.")
            else:
                layers[prefix + name] = 2 * float(ops) / 1e9

    walk(tree, "")
    return 2 * macs / 1e9, layers


def count_flops_check(model: nn.Module, imgsz: int, batch: int = 1) -> float | None:
    """GFLOPs of one forward pass counted by torch.utils.flop_counter.FlopCounterMode; None when it fails."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        x = _zeros_input(model, imgsz, batch)
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
        finally:
            model.train(was_training)
        flops = float(counter.get_total_flops())
    except Exception as e:
        log.debug("FlopCounterMode failed: %s: %s", type(e).__name__, e)
        return None
    if not math.isfinite(flops) or flops <= 0:
        return None
    return flops / 1e9


def _zeros_input(model: nn.Module, imgsz: int, batch: int):
    import torch

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros(batch, 3, imgsz, imgsz, device=device, dtype=dtype)


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters once, buffers never)."""
    from optkit.models.params import count_params as _count_params

    return _count_params(model)
