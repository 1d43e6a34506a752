"""Float vs quantized on the same images, as the model's task reads them (docs/architecture.md, "The task
seam"): the task's metrics of each model on labelled batches, and label-free fidelity (the task's
agreement, the SQNR of every output, and for a decoded detector output the SQNR of its boxes and of its
class scores apart: box pixels are hundreds of times larger than probabilities, so one SQNR over both
would hardly see the scores)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optkit.tasks import Task


@dataclass
class Fidelity:
    images: int
    agreement: float | None  # task.agreement over all images (top-1 agreement for a classifier)
    sqnr_db: float  # 10 log10(sum ref^2 / sum (ref - out)^2) over all outputs; inf when equal
    parts_sqnr_db: dict[str, float] = field(default_factory=dict)  # output_parts: {"boxes", "scores"} or {}

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def fidelity(reference, model, batches: Iterable, task: Task | None = None, num_classes: int = 0) -> Fidelity:
    """Run both models (eval mode, CPU) on `batches` of images. The SQNR covers every output (all of a
    detection head's); the agreement is the task's (`task.agreement` on `task.read_outputs`), None
    without a task or when the task has no single answer per image; the parts' SQNR is that of the
    task's outputs split by `output_parts` (a detector's boxes and scores), {} when they do not split."""
    import torch

    n = agree = 0
    whole, parts = _Noise(), {}
    agreed = task is not None
    with torch.no_grad():
        for images in batches:
            ref_out, out = reference(images), model(images)
            whole.add(_flat(ref_out), _flat(out))
            n += images.shape[0]
            if task is None:
                continue
            ref_read, read = task.read_outputs(ref_out, num_classes), task.read_outputs(out, num_classes)
            for name, (r, o) in _split_pair(ref_read, read, num_classes).items():
                parts.setdefault(name, _Noise()).add(r, o)
            if agreed:
                share = task.agreement(ref_read, read)
                agreed = share is not None
                # a fraction of this batch's images: their count, exact (the fraction may be a float32 mean)
                agree += round(share * images.shape[0]) if agreed else 0
    if n == 0:
        from optkit.errors import DatasetError

        raise DatasetError("no images to compare the models on")
    return Fidelity(
        images=n,
        agreement=agree / n if agreed else None,
        sqnr_db=whole.sqnr_db(),
        parts_sqnr_db={name: p.sqnr_db() for name, p in parts.items()},
    )


def output_parts(output, num_classes: int) -> dict | None:
    """A decoded detector output [B, 4 + nc, N] split into "boxes" (rows 0..3: centre x, centre y, width,
    height in input pixels) and "scores" (rows 4..: class probabilities); None for any other output (a
    classifier's logits are one part)."""
    import torch

    if not isinstance(output, torch.Tensor) or output.dim() != 3 or output.shape[1] != 4 + num_classes:
        return None
    return {"boxes": output[:, :4], "scores": output[:, 4:]}


def _split_pair(reference, output, num_classes: int) -> dict:
    """{part: (reference part, output part)} of two outputs of the same layout; {} when they do not split."""
    ref_parts, parts = output_parts(reference, num_classes), output_parts(output, num_classes)
    if ref_parts is None or parts is None:
        return {}
    return {name: (ref_parts[name], parts[name]) for name in ref_parts}


class _Noise:
    """Running sums of signal (reference^2) and noise ((reference - output)^2), float64."""

    def __init__(self) -> None:
        self.signal = self.noise = 0.0

    def add(self, reference, output) -> None:
        ref, out = reference.double(), output.double()
        self.signal += ref.pow(2).sum().item()
        self.noise += (ref - out).pow(2).sum().item()

    def sqnr_db(self) -> float:
        """10 log10(signal / noise); inf when the outputs are equal."""
        return 10 * math.log10(self.signal / self.noise) if self.noise > 0 else math.inf


def task_metrics(model, batches: Iterable, task: Task, num_classes: int) -> dict:
    """`task.evaluate` of `model` on CPU over labelled `(images, targets)` batches, the model's outputs
    read as the task reads them (`task.read_outputs`: a foreign model may wrap its logits)."""
    import torch

    return task.evaluate(_reading_outputs(model, task, num_classes), batches, torch.device("cpu"))


def _reading_outputs(model, task: Task, num_classes: int):
    """`model` wrapped so that it returns what `task.read_outputs` makes of its output. The wrapper is in
    `model`'s mode: an evaluation that restores the mode it found leaves `model` as it was (a detector
    put back in training mode would return its raw maps)."""
    from torch import nn

    class OutputsRead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return task.read_outputs(self.model(x), num_classes)

    return OutputsRead().train(model.training)


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
    total = _Noise()
    for r, o in zip(reference_outputs, outputs, strict=True):
        total.add(_flat(r), _flat(o))
    return total.sqnr_db()


def parts_sqnr_db(reference_outputs: list, outputs: list, read, num_classes: int) -> dict[str, float]:
    """SQNR (dB) of each part (`output_parts`) of the outputs as `read(output)` gives them (the task's
    reading), {} when they do not split."""
    sums: dict = {}
    for r, o in zip(reference_outputs, outputs, strict=True):
        for name, (ref_part, part) in _split_pair(read(r), read(o), num_classes).items():
            sums.setdefault(name, _Noise()).add(ref_part, part)
    return {name: s.sqnr_db() for name, s in sums.items()}
