"""Image classification: ImageFolder data, cross-entropy, top-1 / top-5 (docs/architecture.md, "The task
seam"). The reference task: what every flow asks a task, answered for classifiers."""

from __future__ import annotations

from collections.abc import Callable

from optkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from optkit.tasks.base import Metric, Task, register_task

BUILTIN_IMGSZ = 64  # pixels: the built-in classification sets are generated at this size


class Classify(Task):
    name = "classify"
    metrics = (Metric("top1", "top-1", percent=True), Metric("top5", "top-5", percent=True))
    fitness_key = "top1"
    output_names = ("logits",)
    default_data = "builtin:shapes"
    loss_label = "cross-entropy"
    distill_label = "KL to the float model"
    preprocess = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}  # 0-1 scale

    # ---- data -------------------------------------------------------------------------------
    def resolve_data(
        self,
        spec: str,
        log: Callable[[str], None] | None = None,
        skip_bad_labels: bool = False,
        splits: tuple[str, ...] = ("train", "val"),
    ):
        from optkit.data.loader import resolve_data

        return resolve_data(spec, log=log)  # class folders have no label files to skip

    def default_imgsz(self, spec: str) -> int | None:
        return BUILTIN_IMGSZ if spec.startswith("builtin:") else None

    def check_classes(self, names: list[str], root) -> None:
        from optkit.data.loader import require_two_classes

        require_two_classes(list(names), root)

    def train_loader(self, data, names, imgsz, batch, workers, seed, fraction=1.0, rank=0, world=1,
                     cache=False, options=None):  # fmt: skip
        from optkit.data import ImageFolder, TrainTransform, build_train_loader

        dataset = ImageFolder(data.train_dir, TrainTransform(imgsz), classes=list(names), cache=cache)
        return build_train_loader(dataset, batch, workers, seed, fraction=fraction, rank=rank, world=world)

    def val_loader(self, data, names, imgsz, batch, workers, preprocess=None):
        from optkit.data import build_val_loader

        return build_val_loader(self.image_dataset(data, names, imgsz, "val", preprocess), batch, workers)

    def image_dataset(self, data, names, imgsz, split, preprocess=None):
        from optkit.data import ImageFolder, ValTransform

        norm = {"mean": preprocess["mean"], "std": preprocess["std"]} if preprocess else {}
        folder = {"train": data.train_dir, "val": data.val_dir}[split]
        return ImageFolder(folder, ValTransform(imgsz, **norm), classes=list(names))

    # ---- training and evaluation ----------------------------------------------------------------
    def loss(self, options: dict, model=None) -> Callable:
        import torch

        return torch.nn.CrossEntropyLoss(label_smoothing=options.get("label_smoothing", 0.0))

    judges_each_image = True

    def evaluate(self, model, loader, device, amp: bool = False, options: dict | None = None) -> dict:
        """options {"per_image": True}: also "correct", whether top-1 is right per val image (in order)."""
        from optkit.measure.evaluate import evaluate

        per_image = bool((options or {}).get("per_image"))
        return evaluate(model, loader, device, amp=amp, per_image=per_image).as_dict()

    def distill_loss(self, student, teacher, options: dict):
        """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch: how far the
        student's class scores are from the teacher's (both (N, C) logits; the teacher's carry no
        gradient). T: options["temperature"] (default 1); the T^2 keeps the gradient's scale apart
        from T."""
        import torch.nn.functional as F

        t = options.get("temperature", 1.0)
        target = F.softmax(teacher.outputs.detach().float() / t, dim=1)
        log_student = F.log_softmax(student.outputs.float() / t, dim=1)
        return F.kl_div(log_student, target, reduction="batchmean") * t * t

    # ---- outputs --------------------------------------------------------------------------------
    def read_outputs(self, output, num_classes: int):
        from optkit.measure.validate import class_logits

        return class_logits(output, num_classes)

    def agreement(self, reference, output) -> float:
        return (reference.argmax(1) == output.argmax(1)).float().mean().item()


CLASSIFY = register_task(Classify())
