"""What differs between tasks (classify today, detect next), in one object per task.

The flows (optkit.workflows, the trainer, quantization) ask the task of a model or a checkpoint for
its data, loss, evaluation and outputs, and never test the task's name: a new task is a new `Task`
subclass registered with `register_task`, and no flow changes (docs/architecture.md, "The task seam").

Everything a task returns is plain: loaders yield `(images, targets)` batches (images a float tensor
[N, 3, H, W] normalised as the model expects; targets whatever the task's loss and evaluation read),
metrics are dicts of floats, and one of them, `fitness_key`, is the single number that picks `best.pt`
and in which accuracy budgets (`--auto-skip`) are measured. Higher is better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """One figure a task reports: its key in metric dicts, a short label, and how to show it."""

    key: str
    label: str
    percent: bool = False  # a fraction in [0, 1] shown as a percentage


@dataclass
class DistillPass:
    """One forward pass as distillation reads it (`Task.distill_forward`, `Task.distill_loss`)."""

    outputs: Any  # what the model returns in training mode (a classifier's logits, a detector's raw maps)
    features: Any = None  # the maps its head reads (a detector's neck outputs), when the task gives them


class Task:
    """The interface; `optkit.tasks.classify.Classify` is the reference implementation."""

    name: str = ""
    metrics: tuple[Metric, ...] = ()  # what evaluate() returns, in report order (plus "loss", "images")
    fitness_key: str = ""  # the metric that picks best.pt; higher is better
    output_names: tuple[str, ...] = ()  # names of an exported graph's outputs
    default_data: str = ""  # --data when none is given (a built-in set)
    default_lr0: float = 0.001  # `optkit train` --lr0 when none is given
    loss_names: tuple[str, ...] = ("loss",)  # the parts of the training loss (results.csv: train_<name>)
    loss_label: str = "loss"  # how a report names the training loss
    distill_label: str = "distillation from the float model"  # how a report names distill_loss
    preprocess: dict = {}  # {"mean", "std"} the task's models read images with ({}: ImageNet's)

    # ---- data -------------------------------------------------------------------------------
    def resolve_data(
        self,
        spec: str,
        log: Callable[[str], None] | None = None,
        skip_bad_labels: bool = False,
        splits: tuple[str, ...] = ("train", "val"),
    ) -> Any:
        """`--data` to a dataset description with `.names` (class names) and `.root`; raises
        DatasetError naming what is wrong. `log` receives progress lines (dataset generation, label
        scans); `skip_bad_labels`: drop images whose labels are bad instead of refusing the dataset (a
        task without label files ignores it); `splits`: the splits the caller reads (a task that scans
        labels scans only those)."""
        raise NotImplementedError

    def default_imgsz(self, spec: str) -> int | None:
        """The training size for dataset `spec` when none is given (a built-in set's own size), or None
        for the model's default."""
        return None

    def check_classes(self, names: list[str], root) -> None:
        """Refuse a class list this task cannot learn or measure (e.g. one class for a classifier)."""

    def train_loader(self, data, names: list[str], imgsz: int, batch: int, workers: int, seed: int,
                     fraction: float = 1.0, rank: int = 0, world: int = 1, cache: bool = False,
                     options: dict | None = None):  # fmt: skip
        """(DataLoader, sampler with set_epoch) over the train split with augmentation that is a pure
        function of (seed, epoch, index), so resume is exact. `options`: the run's task options (detect:
        "mosaic_epochs", the epochs at the start that use mosaic)."""
        raise NotImplementedError

    def val_loader(self, data, names: list[str], imgsz: int, batch: int, workers: int,
                   preprocess: dict | None = None):  # fmt: skip
        """A DataLoader over the val split without augmentation; `preprocess`: {"mean", "std"}."""
        raise NotImplementedError

    def image_dataset(self, data, names: list[str], imgsz: int, split: str, preprocess: dict | None = None):
        """The split's images as the model sees them at validation (no augmentation), indexable:
        dataset[i] -> (image, target). Calibration and fidelity read images from it."""
        raise NotImplementedError

    def collate(self, items: list):
        """A list of `image_dataset` items -> one (images, targets) batch, as the task's loaders make."""
        from torch.utils.data import default_collate

        return default_collate(items)

    # ---- training and evaluation ----------------------------------------------------------------
    def loss(self, options: dict, model=None) -> Callable:
        """`loss(outputs, targets)` for a training batch of `model`: a scalar tensor, or `(total, items)`
        with `items` a detached tensor of the `loss_names` parts per image (what results.csv logs);
        `options` are the train config's task options (e.g. label_smoothing, detect's box/cls/dfl gains)."""
        raise NotImplementedError

    def evaluate(self, model, loader, device, amp: bool = False) -> dict:
        """Metrics of `model` on `loader`: every key of `metrics`, plus "loss" (None when the model
        cannot give it), each of `loss_names` and "images". A task with evaluation settings (a
        detector's thresholds) also takes `options`, a dict of them."""
        raise NotImplementedError

    # evaluate(..., options={"per_image": True}) adds "correct": per val image (in order), whether the model
    # got it right, so that two models can be compared image by image (optkit.measure.paired)
    judges_each_image: bool = False

    def fitness(self, metrics: dict) -> float:
        return float(metrics[self.fitness_key])

    @property
    def fitness_metrics(self) -> tuple[Metric, ...]:
        """The metrics fitness() is made of, fitness_key's first: what a before / after report shows (a
        classifier's top-1; a detector's mAP50-95 and mAP50)."""
        first = [m for m in self.metrics if m.key == self.fitness_key]
        return tuple(first + [m for m in self.metrics if m.key in self.fitness_parts and m not in first])

    fitness_parts: tuple[str, ...] = ()  # metric keys fitness() weighs besides fitness_key

    fitness_label: str = (
        ""  # how the report names fitness() when it is not one metric ("": that metric's label)
    )

    # ---- distillation (QAT: optkit.quant.qat) -------------------------------------------------------
    def distill_forward(self, model, images) -> DistillPass:
        """One pass of `model` as `distill_loss` reads it. A model in training mode (the student) runs its
        own forward, whose outputs the task's loss also reads; one in eval mode (the teacher) gives the
        same kind of outputs, computed without changing the model."""
        return DistillPass(model(images))

    def distill_loss(self, student: DistillPass, teacher: DistillPass, options: dict):
        """A scalar tensor, added to the task's loss, that is zero when the student's pass equals the
        teacher's and grows as they part; gradients reach the student only. `options`: "temperature"
        and the task's own weights."""
        raise NotImplementedError

    # ---- pictures -------------------------------------------------------------------------------
    draws_pictures: bool = False  # evaluate(..., options={"details": True}) returns "details" for pictures()

    def pictures(self, folder, details, names: list[str]) -> list[str]:
        """Write the task's pictures of a validation (its `details`) into `folder`; returns their names."""
        return []

    # ---- outputs --------------------------------------------------------------------------------
    def read_outputs(self, output, num_classes: int):
        """The tensor the task's metrics read from what a model returns (a foreign model may wrap it)."""
        return output

    def agreement(self, reference, output) -> float | None:
        """Label-free: the fraction of images on which two models' outputs give the same answer
        (None when the task has no single answer per image)."""
        return None

    def new_head_(self, model, num_classes: int) -> list[str]:
        """Re-initialise the model's head for `num_classes` classes in place; returns the names of the
        re-initialised parameters (the model declares its head: see optkit.models.parts)."""
        raise NotImplementedError


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if not task.name or task.name in _TASKS:
        from optkit.errors import ConfigError

        raise ConfigError(f"task {task.name!r} has no name or is registered twice")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called `name` (a checkpoint's `task` field, a zoo model's task)."""
    from optkit.tasks import load_builtin_tasks

    load_builtin_tasks()
    if name not in _TASKS:
        from optkit.errors import CheckpointError

        known = ", ".join(sorted(_TASKS))
        raise CheckpointError(f"unknown task {name!r}; this optkit knows: {known}")
    return _TASKS[name]
