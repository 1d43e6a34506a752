"""Per-layer sensitivity: quantize one layer at a time and see how much the output moves.

Default metric `sqnr`: SQNR (dB) of the logits against the float model on the calibration images
(label-free; lower = more sensitive). `top1`: val top-1 with only that layer quantized (needs labels,
one validation pass per layer). `auto_skip` then keeps the most sensitive layers in float, one at a time,
until the INT8 model's top-1 is within `drop` percentage points of the float model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optkit.quant.compare import sqnr_db
from optkit.quant.quantizers import quantization_off, quantized_layers

METRICS = ("sqnr", "top1")


@dataclass
class LayerSensitivity:
    layer: str
    sqnr_db: float | None = None  # only this layer quantized, vs float
    top1: float | None = None  # only this layer quantized

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def sensitivity(
    model, batches: list, metric: str = "sqnr", top1_of: Callable | None = None
) -> list[LayerSensitivity]:
    """Every quantized layer of `model`, most sensitive first."""
    import torch

    with torch.no_grad(), quantization_off(model):
        reference = [model(x) for x in batches]
    rows = []
    for layer in quantized_layers(model):
        with torch.no_grad(), quantization_off(model, keep=layer):
            row = LayerSensitivity(layer)
            if metric == "top1":
                row.top1 = top1_of(model)
            else:
                row.sqnr_db = sqnr_db(reference, [model(x) for x in batches])
        rows.append(row)
    key = (lambda r: r.top1) if metric == "top1" else (lambda r: r.sqnr_db)
    return sorted(rows, key=key)


def auto_skip(
    model, ranked: list[LayerSensitivity], float_top1: float, drop_pp: float, top1_of: Callable
) -> tuple[list[str], float]:
    """Disable the quantizers of the most sensitive layers, in order, until top-1 is within `drop_pp`
    percentage points of `float_top1` (fractions in [0, 1]). Returns (skipped layers, final top-1);
    the model keeps those layers' quantizers disabled."""
    from optkit.quant.quantizers import quantizers

    skipped: list[str] = []
    top1 = top1_of(model)
    for row in ranked:
        if (float_top1 - top1) * 100 <= drop_pp:
            break
        for name, q in quantizers(model).items():
            if name.rsplit(".", 1)[0] == row.layer:
                q.disable()
        skipped.append(row.layer)
        top1 = top1_of(model)
    return skipped, top1
