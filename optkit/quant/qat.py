"""Quantization-aware training, the library half: the trainer with fake quantization in the loop and an
optional distillation term (the `optkit qat` flow around it is optkit.workflows.qat).

The trainer's model is rebuilt from a calibrated (PTQ) checkpoint, whose replay puts the quantizers back;
gradients pass through the rounding as straight-through estimates and the calibrated amax values stay
fixed. `distill` adds KL(teacher || student) at temperature T (times T^2, so its gradient scale does not
depend on T) to the task's loss, the teacher being the same model with quantization off: the student
learns to match the float outputs, which needs no labels.
"""

from __future__ import annotations

import copy

from optkit.train.trainer import Trainer


def distillation_loss(student, teacher, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch: how far the
    student's class scores are from the teacher's (both (N, C) logits; the teacher's carry no gradient)."""
    import torch.nn.functional as F

    t = temperature
    target = F.softmax(teacher.detach().float() / t, dim=1)
    log_student = F.log_softmax(student.float() / t, dim=1)
    return F.kl_div(log_student, target, reduction="batchmean") * t * t


class QatTrainer(Trainer):
    """The trainer, with an optional distillation term from the float (quantization-off) model."""

    def __init__(self, cfg, progress=None, distill: bool = False, temperature: float = 1.0):
        super().__init__(cfg, progress=progress)
        self.distill, self.temperature = distill, temperature
        self.teacher = None

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
        import torch

        from optkit.train.trainer import loss_parts

        outputs = self.train_model(images)
        loss, items = loss_parts(self.criterion(outputs, labels))
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher(images)
            loss = loss + distillation_loss(outputs, teacher, self.temperature)
        return loss, items


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
