"""Quantization-aware training, the library half: the trainer with fake quantization in the loop and an
optional distillation term (the `optkit qat` flow around it is optkit.workflows.qat).

The trainer's model is rebuilt from a calibrated (PTQ) checkpoint, whose replay puts the quantizers back;
gradients pass through the rounding as straight-through estimates and the calibrated amax values stay
fixed. `distill` adds the task's distillation term (`Task.distill_loss`) to the task's loss, the teacher
being the same model with quantization off: the student learns to match the float model's outputs (a
classifier's class scores, KL at temperature T; a detector's head maps and, when asked, its neck maps:
optkit.tasks.detect_distill), which needs no labels.
"""

from __future__ import annotations

import copy

from optkit.train.trainer import Trainer


class QatTrainer(Trainer):
    """The trainer, with an optional distillation term from the float (quantization-off) model.
    `distill_options`: the task's distillation settings beside the temperature (a detector's gains)."""

    def __init__(self, cfg, progress=None, distill: bool = False, temperature: float = 1.0,
                 distill_options: dict | None = None):  # fmt: skip
        super().__init__(cfg, progress=progress)
        self.distill, self.temperature = distill, temperature
        self.distill_options = {**(distill_options or {}), "temperature": temperature}
        self.teacher = None
        self.distill_history: list[float] = []  # per epoch: the mean distillation term per batch
        self._distill_sum, self._distill_batches = 0.0, 0

    def setup(self) -> None:
        super().setup()
        if self.distill:
            from optkit.quant.quantizers import quantizers

            self.teacher = copy.deepcopy(self.model).eval()
            for q in quantizers(self.teacher).values():
                q.disable()
            self.teacher.requires_grad_(False)

    def _loss(self, images, labels):
        """The trainer's loss of the batch (optkit.train.trainer's hook), plus the distillation term."""
        if self.teacher is None:
            return super()._loss(images, labels)
        import torch

        from optkit.train.trainer import loss_parts

        student = self.task.distill_forward(self.train_model, images)
        loss, items = loss_parts(self.criterion(student.outputs, labels))
        with torch.no_grad():
            teacher = self.task.distill_forward(self.teacher, images)
        term = self.task.distill_loss(student, teacher, self.distill_options)
        self._distill_sum = self._distill_sum + term.detach()  # a tensor: no device sync per batch
        self._distill_batches += 1
        return loss + term, items

    def _epoch(self, epoch, wdir):
        self._distill_sum, self._distill_batches = 0.0, 0
        result = super()._epoch(epoch, wdir)
        if self._distill_batches:
            self.distill_history.append(float(self._distill_sum) / self._distill_batches)
        return result


def remeasure_onnx_ranges_(ckpt, batches: list) -> None:
    """Measure the ONNX activation ranges of a quantized checkpoint's model again (QAT moved its weights)
    on image `batches`, into its quantize transform entry (in place)."""
    from optkit.checkpoint import build_model
    from optkit.quant.ptq import onnx_ranges_of
    from optkit.quant.quantizers import quantize_entry
    from optkit.tasks import get_task

    names = tuple(get_task(ckpt.task).output_names)
    ranges = onnx_ranges_of(build_model(ckpt), ckpt.imgsz, batches, names)
    quantize_entry(ckpt.transforms)["onnx_ranges"] = ranges
