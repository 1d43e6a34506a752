"""Exporting a quantized checkpoint: the float graph of the same model, rewritten to QDQ for a target,
checked against the fake-quant PyTorch model (optkit.stages.export does the tracing, writing and checking).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.limits import FieldError
from optkit.quant.config import TARGETS

if TYPE_CHECKING:
    from torch import nn

# Default parity tolerances, max |Δ| / max |logit| against the fake-quant model on random inputs.
# tensorrt computes what ModelOpt's fake quant computes: differences come from rounding ties and int32
# bias rounding. onnxruntime also rounds at Add/Concat/pooling/activation outputs that the fake-quant
# model keeps in float (and at twice the resolution after ReLU), so it differs by more.
# measured: PTQ checkpoints 0.02-0.08 (onnxruntime), a QAT checkpoint 0.144 on random inputs while its val
# images gave 0.056 and 99.2% top-1 agreement (random inputs leave the calibrated ranges more often)
# openvino shares a pair among a tensor's readers (the largest of their ranges) and rounds before a
# Split, which the fake-quant model does not: the onnxruntime flavour's tolerance.
ATOL_INT8 = {"tensorrt": 0.02, "onnxruntime": 0.25, "openvino": 0.25}


def default_target() -> str:
    """tensorrt where CUDA is available (the GPU deployment path), else onnxruntime (CPU)."""
    import torch

    return "tensorrt" if torch.cuda.is_available() else "onnxruntime"


def check_target(target: str | None) -> str | None:
    if target is not None and target not in TARGETS:
        raise FieldError("int8_target", f"must be one of {', '.join(TARGETS)}, got {target!r}")
    return target


@dataclass
class Int8Plan:
    target: str
    float_model: nn.Module  # traced: the same weights, quantizers off
    layers: dict  # layer name -> LayerQuant
    ranges: dict  # tensor name -> (min, max)
    silu_form: str = "auto"  # onnxruntime: the int8 form of SiLU (optkit.quant.silu_form)
    parity: object = None  # onnxruntime: a silu_form.ParityCheck the SiLU form must pass (None: unchecked)
    float_tail: bool = False  # onnxruntime: no Q/DQ after the last quantized layers (qdq.build_qdq)
    imgsz: int | None = None  # pixels: the export's input side, where silu_form auto times a dynamic graph
    report: dict = field(default_factory=dict)  # filled by rewrite()

    def rewrite(self, proto):
        from optkit.quant import silu_form
        from optkit.quant.qdq import build_qdq

        def build(silu_unit: bool):
            return build_qdq(
                proto, self.layers, self.ranges, self.target, silu_unit=silu_unit, float_tail=self.float_tail
            )

        if self.target == "onnxruntime":
            qdq, report = silu_form.choose(build, self.silu_form, self.parity, imgsz=self.imgsz)
        else:
            qdq, report = build(False)
        self.report = report.as_dict()
        return qdq


def int8_plan(
    model: nn.Module,
    entry: dict,
    target: str,
    silu_form: str = "auto",
    float_tail: bool = False,
    imgsz: int | None = None,
) -> Int8Plan:
    """The plan for exporting fake-quant `model` (rebuilt from a checkpoint with quantize transform
    `entry`) as a `target` QDQ graph. `float_tail`: the post-processing after the last quantized layers
    stays float (a detector's decode: optkit.stages.task_output.FLOAT_TAIL_TASKS). `imgsz`: pixels, the
    export's input side (Int8Plan.imgsz)."""
    from optkit.quant.quantizers import onnx_ranges, quantizers

    float_model = copy.deepcopy(model)
    for q in quantizers(float_model).values():
        q.disable()
    plan = Int8Plan(target, float_model, layer_quants(model), onnx_ranges(entry), silu_form)
    plan.float_tail, plan.imgsz = float_tail, imgsz
    return plan


def layer_quants(model: nn.Module) -> dict:
    from optkit.quant.qdq import LayerQuant
    from optkit.quant.quantizers import quantized_layers, quantizers

    active = quantizers(model)
    found = {}
    for layer in quantized_layers(model):
        weight = active[layer + ".weight_quantizer"].amax.detach().float().reshape(-1).numpy()
        inp = active.get(layer + ".input_quantizer")
        if inp is None:
            continue  # weight-only quantization is not an INT8 graph optkit writes
        found[layer] = LayerQuant(float(inp.amax.detach().float().reshape(-1).max()), weight)
    return found
