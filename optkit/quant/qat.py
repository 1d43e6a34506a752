"""The `optkit qat` flow: fine-tune a calibrated (PTQ) checkpoint with fake quantization in the loop.

The embedded trainer does the work (`--weights` = the PTQ checkpoint, whose replay rebuilds the
quantizers; gradients pass through the rounding as straight-through estimates and the calibrated amax
values stay fixed). `distill` adds KL(teacher || student) at temperature T (times T^2, so its gradient
scale does not depend on T) to the cross-entropy, the teacher being the same model with quantization off:
the student learns to match the float outputs, which needs no labels. The best epoch by val top-1 is
kept (best.pt); its ONNX activation ranges are measured again on the calibration images, since the
weights moved.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from optkit.errors import ConfigError
from optkit.train.trainer import Trainer


@dataclass
class QatRequest:
    weights: str
    train: dict = field(default_factory=dict)  # TrainConfig fields (data, epochs, lr0, ...)
    distill: bool = False
    temperature: float = 1.0
    num_images: int | None = None  # for the ONNX ranges; None: what ptq-calibrate used

    def validate(self) -> QatRequest:
        if not 0 < self.temperature <= 100:
            raise ConfigError(f"--temperature must be in (0, 100], got {self.temperature}")
        return self


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
        import torch
        import torch.nn.functional as F

        logits = self.train_model(images)
        loss = self.criterion(logits, labels)
        if self.teacher is not None:
            t = self.temperature
            with torch.no_grad():
                target = F.softmax(self.teacher(images).float() / t, dim=1)
            student = F.log_softmax(logits.float() / t, dim=1)
            loss = loss + F.kl_div(student, target, reduction="batchmean") * t * t
        return loss


def run_qat(req: QatRequest, progress=None) -> dict:
    """`progress`: an optkit.report.progress display (default: quiet), a TrainDisplay to also show the
    epochs. Every input is checked before the first step that prints a line."""
    from optkit.checkpoint import load_checkpoint
    from optkit.data import ImageFolder, resolve_data
    from optkit.measure.validate import check_classes
    from optkit.quant.quantizers import quantize_entry
    from optkit.report.progress import Quiet
    from optkit.train.config import TrainConfig

    progress = progress or Quiet()
    req.validate()
    ckpt = load_checkpoint(req.weights, reader="qat")
    entry = quantize_entry(ckpt.transforms)
    if entry is None:
        raise ConfigError(
            f"{req.weights} is not quantized: qat fine-tunes a calibrated checkpoint "
            f"(run optkit ptq-calibrate {req.weights} --data ... first)"
        )
    cfg = TrainConfig(**{**req.train, "weights": req.weights}).validate()
    spec = resolve_data(cfg.data)
    check_classes(spec, ckpt.names)
    for split in (spec.train_dir, spec.val_dir):  # refused now rather than after the first steps
        ImageFolder(split, None, classes=list(ckpt.names))  # scans the folder, decodes nothing
    trainer = QatTrainer(cfg, progress=progress, distill=req.distill, temperature=req.temperature)
    trainer.prepare()  # the device and the options, checked before any step
    before = _top1_float_and_ptq(ckpt, spec, progress)
    if req.distill:
        progress.note(f"distilling from the float model (quantization off), temperature {req.temperature}")
    result = trainer.run()
    n = req.num_images or _ptq_images(ckpt)
    with progress.step(f"re-measuring the ONNX activation ranges of {result.best} on {n} images"):
        ranges_s = _refresh_ranges(result.best, spec, n)
    notes = []
    if result.best_top1 < before["ptq_top1"]:
        notes.append(
            f"QAT's best epoch is below the PTQ input ({result.best_top1:.2%} < "
            f"{before['ptq_top1']:.2%}): keep {req.weights}, or try a lower --lr0"
        )
    return {
        "source": req.weights,
        **result.as_dict(),
        **before,
        "notes": result.notes + notes,
        "qat_top1": result.best_top1,
        "distill": req.distill,
        "ranges_s": ranges_s,
    }


def _top1_float_and_ptq(ckpt, spec, progress) -> dict:
    from optkit.checkpoint import build_model
    from optkit.measure.validate import accuracy_on
    from optkit.quant.quantizers import quantization_off

    with progress.step(f"top-1 of the PTQ model (fake-quant INT8) on {spec.val_dir}"):
        model = build_model(ckpt)
        ptq = accuracy_on(model, ckpt.names, spec, ckpt.imgsz, device="cpu")["top1"]
    with progress.step(f"top-1 of the float model (quantization off) on {spec.val_dir}"):
        with quantization_off(model):
            fp = accuracy_on(model, ckpt.names, spec, ckpt.imgsz, device="cpu")["top1"]
    return {"float_top1": fp, "ptq_top1": ptq}


def _ptq_images(ckpt) -> int:
    for entry in reversed(ckpt.lineage):
        if entry.get("stage") == "ptq-calibrate":
            return int(entry.get("args", {}).get("num_images", 512))
    return 512


def _refresh_ranges(best, spec, num_images: int) -> float:
    """Re-measure best.pt's ONNX activation ranges (its weights moved) and rewrite it atomically."""
    import time

    from optkit.checkpoint import build_model, load_checkpoint, save_checkpoint
    from optkit.data.subset import split_batches
    from optkit.quant.ptq import onnx_ranges_of
    from optkit.quant.quantizers import quantize_entry
    from optkit.stages.export import preprocess_of

    t0 = time.perf_counter()
    ckpt = load_checkpoint(best)
    batches = split_batches(spec.train_dir, ckpt.names, ckpt.imgsz, preprocess_of(ckpt), num_images)
    quantize_entry(ckpt.transforms)["onnx_ranges"] = onnx_ranges_of(build_model(ckpt), ckpt.imgsz, batches)
    save_checkpoint(ckpt, best)
    return time.perf_counter() - t0
