"""What INT8 leaves in float by default: a detector's post-processing.

A detection head ends in fixed arithmetic after its output convs: the DFL decode (a softmax over the bins
of each box side and its expectation with the fixed weights 0..bins-1; Ultralytics' files hold those
weights in a 1x1 conv), the class sigmoid, the box decode (anchor points, strides) and the final concat
into [B, 4 + nc, N]. Quantizing it costs accuracy (box pixels and probabilities near 0 and 1 on one
coarse grid each) and buys no speed (a few cheap ops per cell), so it stays float, as NNCF's YOLOv8
recipe keeps it (DESIGN.md, section 7).

Which modules: the head block declares them when optkit built it (`float_layers`, names inside the
block, and `float_ops`, the words for the decode it runs itself; optkit.models.detect_blocks.Detect). A
head optkit did not build (YOLOv5 / Ultralytics layout, `model.model[-1]`) is a detection head when it
has `nc` and `stride` (the layout's attributes); its post-processing modules are its DFL modules (class
`DFL`: the fixed conv), and `reg_max` tells an anchor-free (DFL) head from YOLOv5's anchored one. Only
Conv/Linear layers ever get quantizers (optkit.quant.quantizers), so the sigmoid, decode and concat are
float in the fake-quant model anyway; the scope is recorded in the quantize transform
(`QuantConfig.float_modules`) so that replays and exports keep the same part float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

FOREIGN_DFL = "DFL"  # class name of the DFL module in YOLO-layout detection heads (a fixed 1x1 conv)
# what a foreign detection head computes after its output convs: with DFL bins (`reg_max`: Ultralytics),
# or without (YOLOv5: sigmoid of every output, box decode from grid and anchors, concat)
FOREIGN_OPS = {
    True: "DFL decode, class sigmoid, box decode, final concat",
    False: "sigmoid, box decode, final concat",
}


@dataclass
class FloatScope:
    """A head's post-processing kept float: its modules (every quantizer inside off), the Conv/Linear
    layers among them (the ones that would otherwise have been quantized) and the words for the rest."""

    head: str
    modules: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    ops: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def float_scope(model: nn.Module) -> FloatScope | None:
    """The post-processing of `model`'s head that INT8 keeps float, or None when the head has none (a
    classifier: its head's last layer is its output)."""
    from optkit.models.parts import head_name
    from optkit.quant.quantizers import quantizable_layers

    head = head_name(model)
    block = dict(model.named_modules()).get(head) if head is not None else None
    if block is None:
        return None
    declared = getattr(type(block), "float_layers", None)
    if declared is not None:
        modules, ops = [f"{head}.{name}" for name in declared], getattr(type(block), "float_ops", "")
    elif hasattr(block, "nc") and hasattr(block, "stride"):  # a YOLO-layout detection head
        modules = [f"{head}.{n}" for n, m in block.named_modules() if n and type(m).__name__ == FOREIGN_DFL]
        ops = FOREIGN_OPS[hasattr(block, "reg_max")]
    else:
        return None
    layers = [n for n in quantizable_layers(model) if any(n == m or n.startswith(m + ".") for m in modules)]
    return FloatScope(head, modules, layers, ops)
