"""Per-layer sensitivity: quantize one layer at a time and see how much the output moves.

Default: SQNR (dB) of the outputs against the float model on a few calibration images (label-free;
lower = more sensitive). With `score_of`: the model's fitness with only that layer quantized (the task's
single number, e.g. val top-1 for a classifier; one evaluation per layer). `auto_skip` then keeps the
most sensitive layers in float, one at a time, until the INT8 model's fitness is within a budget of the
float model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optkit.quant.compare import sqnr_db
from optkit.quant.quantizers import quantization_off, quantized_layers

SENSITIVITY_IMAGES = 128  # calibration images the per-layer SQNR is measured on (enough to rank layers)


@dataclass
class LayerSensitivity:
    layer: str
    sqnr_db: float | None = None  # only this layer quantized, vs float
    fitness: float | None = None  # only this layer quantized: the task's fitness

    def as_dict(self, fitness_key: str = "fitness") -> dict:
        """Plain data; the fitness keyed by the task's metric (`top1` for a classifier)."""
        return {"layer": self.layer, "sqnr_db": self.sqnr_db, fitness_key: self.fitness}


def first_images(batches: list, n: int = SENSITIVITY_IMAGES) -> list:
    """The first `n` images of `batches` (image tensors), as batches."""
    few, taken = [], 0
    for x in batches:
        if taken >= n:
            break
        few.append(x[: n - taken])
        taken += len(few[-1])
    return few


def sensitivity(model, batches: list, score_of: Callable | None = None) -> list[LayerSensitivity]:
    """Every quantized layer of `model`, most sensitive first: by the SQNR of its outputs on `batches`,
    or, with `score_of(model) -> fitness`, by that fitness."""
    import torch

    with torch.no_grad(), quantization_off(model):
        reference = [model(x) for x in batches] if score_of is None else []
    rows = []
    for layer in quantized_layers(model):
        with torch.no_grad(), quantization_off(model, keep=layer):
            row = LayerSensitivity(layer)
            if score_of is not None:
                row.fitness = score_of(model)
            else:
                row.sqnr_db = sqnr_db(reference, [model(x) for x in batches])
        rows.append(row)
    key = (lambda r: r.sqnr_db) if score_of is None else (lambda r: r.fitness)
    return sorted(rows, key=key)


def auto_skip(
    model, ranked: list[LayerSensitivity], float_fitness: float, drop_pp: float, score_of: Callable
) -> tuple[list[str], float]:
    """Disable the quantizers of the most sensitive layers, in order, until the fitness (a fraction in
    [0, 1], from `score_of(model)`) is within `drop_pp` percentage points of `float_fitness`. Returns
    (skipped layers, final fitness); the model keeps those layers' quantizers disabled."""
    from optkit.quant.quantizers import quantizers

    skipped: list[str] = []
    fitness = score_of(model)
    for row in ranked:
        if (float_fitness - fitness) * 100 <= drop_pp:
            break
        for name, q in quantizers(model).items():
            if name.rsplit(".", 1)[0] == row.layer:
                q.disable()
        skipped.append(row.layer)
        fitness = score_of(model)
    return skipped, fitness
