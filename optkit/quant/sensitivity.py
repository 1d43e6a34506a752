"""Per-layer sensitivity: quantize one layer at a time and see how much the output moves.

Default: SQNR (dB) of the outputs against the float model on a few calibration images (label-free;
lower = more sensitive); for an output that splits into parts (a detector's boxes and class scores,
optkit.quant.compare.output_parts) a layer ranks by its worse part, since one SQNR over box pixels and
probabilities would hardly see the scores. With `score_of`: the model's fitness with only that layer
quantized (the task's fitness metric, e.g. val top-1 for a classifier, mAP50-95 for a detector; one
evaluation per layer). `auto_skip` then keeps the most sensitive layers in float, one at a time, until
the INT8 model's fitness is within a budget of the float model's.

Budgets are in points: hundredths of the fitness metric (a fraction in [0, 1]), i.e. percentage points
of top-1, or mAP50-95 x 100 (a budget of 0.5 allows mAP50-95 to fall by 0.005).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optkit.quant.compare import parts_sqnr_db, sqnr_db
from optkit.quant.quantizers import quantization_off, quantized_layers

SENSITIVITY_IMAGES = 128  # calibration images the per-layer SQNR is measured on (enough to rank layers)


@dataclass
class LayerSensitivity:
    layer: str
    sqnr_db: float | None = None  # only this layer quantized, vs float (the worst part's, see above)
    fitness: float | None = None  # only this layer quantized: the task's fitness metric
    parts_sqnr_db: dict[str, float] | None = None  # per output part ({"boxes", "scores"}), when it splits

    def as_dict(self, fitness_key: str = "fitness") -> dict:
        """Plain data; the fitness keyed by the task's metric (`top1` for a classifier, `map` for a
        detector), and `sqnr_<part>_db` for each part of a split output."""
        parts = {f"sqnr_{name}_db": v for name, v in (self.parts_sqnr_db or {}).items()}
        return {"layer": self.layer, "sqnr_db": self.sqnr_db, **parts, fitness_key: self.fitness}


def first_images(batches: list, n: int = SENSITIVITY_IMAGES) -> list:
    """The first `n` images of `batches` (image tensors), as batches."""
    few, taken = [], 0
    for x in batches:
        if taken >= n:
            break
        few.append(x[: n - taken])
        taken += len(few[-1])
    return few


def sensitivity(
    model, batches: list, score_of: Callable | None = None, read: Callable | None = None, num_classes: int = 0
) -> list[LayerSensitivity]:
    """Every quantized layer of `model`, most sensitive first: by the SQNR of its outputs on `batches`,
    or, with `score_of(model) -> fitness`, by that fitness. `read(output)`: the task's reading of an
    output (a detector's [B, 4 + nc, N]), whose parts, when it splits, are ranked by the worse one."""
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
                outputs = [model(x) for x in batches]
                parts = parts_sqnr_db(reference, outputs, read, num_classes) if read is not None else {}
                row.sqnr_db = min(parts.values()) if parts else sqnr_db(reference, outputs)
                row.parts_sqnr_db = parts or None
        rows.append(row)
    key = (lambda r: r.sqnr_db) if score_of is None else (lambda r: r.fitness)
    return sorted(rows, key=key)


def auto_skip(
    model, ranked: list[LayerSensitivity], float_fitness: float, drop_pp: float, score_of: Callable
) -> tuple[list[str], float]:
    """Disable the quantizers of the most sensitive layers, in order, until the fitness (a fraction in
    [0, 1], from `score_of(model)`) is within `drop_pp` points (hundredths) of `float_fitness`. Returns
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
