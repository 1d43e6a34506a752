"""Float vs quantized on the same images, as the model's task reads them (docs/architecture.md, "The task
seam"): the task's metrics of each model on labelled batches, and label-free fidelity (the task's
agreement, and the SQNR of every output)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optkit.tasks import Task


@dataclass
class Fidelity:
    images: int
    agreement: float | None  # task.agreement over all images (top-1 agreement for a classifier)
    sqnr_db: float  # 10 log10(sum ref^2 / sum (ref - out)^2) over all outputs; inf when equal

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def fidelity(reference, model, batches: Iterable, task: Task | None = None, num_classes: int = 0) -> Fidelity:
    """Run both models (eval mode, CPU) on `batches` of images. The SQNR covers every output (all of a
    detection head's); the agreement is the task's (`task.agreement` on `task.read_outputs`), None
    without a task or when the task has no single answer per image."""
    import torch

    n = agree = 0
    signal = noise = 0.0
    agreed = task is not None
    with torch.no_grad():
        for images in batches:
            ref_out, out = reference(images), model(images)
            ref, flat = _flat(ref_out), _flat(out)
            signal += ref.pow(2).sum().item()
            noise += (ref - flat).pow(2).sum().item()
            n += images.shape[0]
            if agreed:
                share = task.agreement(
                    task.read_outputs(ref_out, num_classes), task.read_outputs(out, num_classes)
                )
                agreed = share is not None
                # a fraction of this batch's images: their count, exact (the fraction may be a float32 mean)
                agree += round(share * images.shape[0]) if agreed else 0
    if n == 0:
        from optkit.errors import DatasetError

        raise DatasetError("no images to compare the models on")
    sqnr = 10 * math.log10(signal / noise) if noise > 0 else math.inf
    return Fidelity(images=n, agreement=agree / n if agreed else None, sqnr_db=sqnr)


def task_metrics(model, batches: Iterable, task: Task, num_classes: int) -> dict:
    """`task.evaluate` of `model` on CPU over labelled `(images, targets)` batches, the model's outputs
    read as the task reads them (`task.read_outputs`: a foreign model may wrap its logits)."""
    import torch

    return task.evaluate(_reading_outputs(model, task, num_classes), batches, torch.device("cpu"))


def _reading_outputs(model, task: Task, num_classes: int):
    """`model` wrapped so that it returns what `task.read_outputs` makes of its output."""
    from torch import nn

    class OutputsRead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return task.read_outputs(self.model(x), num_classes)

    return OutputsRead()


def _flat(output):
    """One (N, K) float64 tensor from a model's output: logits as they are, several outputs concatenated."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.double().flatten(1) if output.dim() > 2 else output.double()
    tensors = [
        t for t in (output.values() if isinstance(output, dict) else output) if isinstance(t, torch.Tensor)
    ]
    return torch.cat([t.double().flatten(1) for t in tensors], dim=1)


def sqnr_db(reference_outputs: list, outputs: list) -> float:
    """SQNR (dB) of `outputs` against `reference_outputs` (lists of tensors of equal shapes)."""
    refs, outs = [_flat(r) for r in reference_outputs], [_flat(o) for o in outputs]
    signal = sum(r.pow(2).sum().item() for r in refs)
    noise = sum((r - o).pow(2).sum().item() for r, o in zip(refs, outs, strict=True))
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf
