"""A given model's metrics on a dataset's val split, read through its task (docs/architecture.md, "The
task seam"): what `optkit val`, `benchmark --data` and `prune --data` measure. The flows open the files
(optkit.workflows.val, ...); this module only measures the model it is handed."""

from __future__ import annotations

import time

from optkit.errors import ConfigError, DatasetError


def measure_on_val(
    model,
    task,
    data,
    names: list[str],
    imgsz: int,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "",
    preprocess: dict | None = None,
    eval_options: dict | None = None,
) -> dict:
    """The task's metrics of `model` (an nn.Module or optkit.onnxrt.OrtModel) on the val split of
    `data` (what `task.resolve_data` returned), and how long the pass took.

    Returns {"split", "imgsz", "device", <task.evaluate's metrics, with "loss" and "images">, "seconds",
    "images_per_s"}. names: the model's classes, in its output order; preprocess: {"mean", "std"} the
    model expects (None: optkit's ImageNet normalisation); eval_options: the task's evaluation settings
    (a detector's conf, iou, max_det). What the model returns is read by
    `task.read_outputs` (a foreign classifier's probabilities or tuple, for example)."""
    from optkit.data import default_workers
    from optkit.device import select_device

    task.check_classes(list(names), data.root)  # e.g. one class: top-1 is 100% whatever the model does
    dev = select_device(device)
    workers = workers if workers is not None else default_workers()
    loader = task.val_loader(data, list(names), imgsz, batch_size, workers, preprocess)
    t0 = time.perf_counter()
    options = {"options": eval_options} if eval_options else {}  # tasks without settings take none
    metrics = task.evaluate(OutputsOf(model, task, len(names)).to(dev), loader, dev, **options)
    seconds = time.perf_counter() - t0
    for row in metrics.get("per_class", ()):  # a detector's rows name their class
        row["name"] = names[row["index"]]
    return {
        "split": "val",
        "imgsz": imgsz,
        "device": str(dev),
        **metrics,
        "seconds": seconds,
        "images_per_s": metrics["images"] / seconds if seconds else None,
    }


def check_classes(spec, names: list[str], what: str = "checkpoint") -> None:
    """The dataset's classes are the model's, in the same order (its output index = the class id)."""
    if list(spec.names) != list(names):
        raise DatasetError(
            f"dataset classes do not match the {what}'s: data has {len(spec.names)} "
            f"({_short(spec.names)}), {what} has {len(names)} ({_short(names)})"
        )


def _short(names: list[str], n: int = 4) -> str:
    head = ", ".join(names[:n])
    return head + (", ..." if len(names) > n else "")


class OutputsOf:
    """Calls `model` and returns what the task's metrics read from its output (`task.read_outputs`);
    train/eval/to pass through to the model, so the task's evaluation can treat it as the model."""

    def __init__(self, model, task, num_classes: int) -> None:
        self.model, self.task, self.num_classes = model, task, num_classes

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        self.model = self.model.to(*args, **kwargs)
        return self

    def __call__(self, x):
        return self.task.read_outputs(self.model(x), self.num_classes)


def class_logits(output, num_classes: int):
    """Logits from a classifier's output: a (N, C) tensor, or the (N, C) tensor in a tuple/list (the
    un-normalised one when there are several, as Ultralytics returns (probabilities, logits)). Rows of
    probabilities (Ultralytics' eval-mode softmax) become log-probabilities: same ranking, and
    cross-entropy on them is the true loss. (optkit.tasks.classify reads outputs with it.)"""
    import torch

    items = list(output) if isinstance(output, (tuple, list)) else [output]
    scores = [t for t in items if isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape[1] == num_classes]
    if not scores:
        shapes = [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in items]
        raise ConfigError(
            f"the model's output {shapes} holds no (N, {num_classes}) class scores; val needs a classifier"
        )
    plain = [t for t in scores if not _probabilities(t)]
    if plain:
        return plain[-1]
    return scores[0].float().clamp_min(1e-30).log()


def _probabilities(t) -> bool:
    t = t.float()
    return bool(((t >= 0) & (t <= 1)).all()) and bool(((t.sum(1) - 1).abs() < 1e-3).all())
