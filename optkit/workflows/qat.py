"""The `optkit qat` flow: fine-tune a calibrated (PTQ) checkpoint with fake quantization in the loop.

The embedded trainer does the work (optkit.quant.qat.QatTrainer; `--weights` = the PTQ checkpoint, whose
replay rebuilds the quantizers). Before it, the float and the PTQ model are evaluated as the
checkpoint's task evaluates them; the best epoch by the task's fitness is kept (best.pt: a detector's
0.1 mAP50 + 0.9 mAP50-95), and its ONNX activation ranges are measured again on the calibration images,
since the weights moved. The result names every metric of the task by its key: `float_<key>`,
`ptq_<key>`, `qat_<key>` (`top1`, `top5` for a classifier; `map`, `map50`, `precision`, `recall` for a
detector; QAT's are best.pt's), and `shown` lists the ones a report shows (Task.fitness_metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.errors import ConfigError

QAT_PROJECT = "runs/qat"  # where the run folders go unless the train options name a --project
EVAL_BATCH = 128  # images per batch of the float / PTQ evaluations before training
PTQ_IMAGES = 512  # ONNX range images when the checkpoint does not say how many ptq-calibrate used


@dataclass
class QatRequest:
    weights: str
    train: dict = field(default_factory=dict)  # TrainConfig fields (data, epochs, lr0, ...)
    distill: bool = False
    temperature: float = 1.0
    num_images: int | None = None  # for the ONNX ranges; None: what ptq-calibrate used
    distill_options: dict = field(default_factory=dict)  # the task's distillation gains (Task.distill_loss)

    def __post_init__(self) -> None:
        if not 0 < self.temperature <= 100:
            raise ConfigError(f"--temperature must be in (0, 100], got {self.temperature}")

    @property
    def project(self) -> str:
        return self.train.get("project") or QAT_PROJECT


def run_qat(req: QatRequest, progress=None) -> dict:
    """`progress`: an optkit.report.progress display (default: quiet), a TrainDisplay to also show the
    epochs. Every input is checked before the first step that prints a line."""
    from optkit.limits import options_named
    from optkit.workflows.train import FLAGS

    with options_named(FLAGS):  # the trainer's errors name TrainConfig's fields; qat's flags are train's
        return _qat(req, progress)


def _qat(req: QatRequest, progress) -> dict:
    from optkit.measure.validate import check_classes
    from optkit.quant.qat import QatTrainer
    from optkit.quant.quantizers import quantize_entry
    from optkit.report.progress import Quiet
    from optkit.tasks import get_task
    from optkit.train.config import TrainConfig
    from optkit.workflows.inputs import load_optkit_checkpoint
    from optkit.workflows.outputs import check_run_folder

    progress = progress or Quiet()
    check_run_folder(req.project)  # before any work
    ckpt = load_optkit_checkpoint(req.weights, "qat")
    if quantize_entry(ckpt.transforms) is None:
        raise ConfigError(
            f"{req.weights} is not quantized: qat fine-tunes a calibrated checkpoint "
            f"(run optkit ptq-calibrate {req.weights} --data ... first)"
        )
    cfg = TrainConfig(**{**req.train, "project": req.project, "weights": req.weights}).validate()
    task = get_task(ckpt.task)
    spec = task.resolve_data(cfg.data)
    check_classes(spec, ckpt.names)
    task.check_classes(list(spec.names), spec.root)
    for split in ("train", "val"):  # refused now rather than after the first steps
        task.image_dataset(spec, ckpt.names, ckpt.imgsz, split)  # scans the folder, decodes nothing
    trainer = QatTrainer(
        cfg, progress=progress, distill=req.distill, temperature=req.temperature,
        distill_options=req.distill_options,
    )  # fmt: skip
    trainer.prepare()  # the device and the options, checked before any step
    before = _float_and_ptq(ckpt, task, spec, cfg.workers, progress)
    if req.distill:
        progress.note(f"distilling from the float model (quantization off), temperature {req.temperature}")
    result = trainer.run()
    n = req.num_images or _ptq_images(ckpt)
    with progress.step(f"re-measuring the ONNX activation ranges of {result.best} on {n} images"):
        ranges_s, best_metrics = _refresh_ranges(result.best, task, spec, n)
    after = {f"qat_{m.key}": best_metrics.get(m.key) for m in task.metrics}
    notes = []
    ptq_fitness = task.fitness(_metrics_of(before, "ptq", task))
    if result.best_fitness < ptq_fitness:
        notes.append(
            f"QAT's best epoch is below the PTQ input ({_fitness_text(task, result.best_fitness)} < "
            f"{_fitness_text(task, ptq_fitness)}): keep {req.weights}, or try a lower --lr0"
        )
    return {
        "source": req.weights,
        **result.as_dict(),
        **before,
        **after,
        "shown": [{"key": m.key, "label": m.label, "percent": m.percent} for m in task.fitness_metrics],
        "notes": result.notes + notes,
        "distill": req.distill,
        "loss": task.loss_label + (f" + {task.distill_label}" if req.distill else ""),
        "distill_loss": trainer.distill_history,  # per epoch: the mean distillation term per batch
        "ranges_s": ranges_s,
    }


def _metrics_of(result: dict, stage: str, task) -> dict:
    """The metrics `<stage>_<key>` of a result, by their keys."""
    return {m.key: result[f"{stage}_{m.key}"] for m in task.metrics}


def _fitness_text(task, value: float) -> str:
    """ "96.50%" for a fitness that is a percentage metric (a classifier's top-1), else "fitness 0.6120"."""
    metric = next((m for m in task.metrics if m.key == task.fitness_key), None)
    return f"{value:.2%}" if metric and metric.percent and not task.fitness_label else f"fitness {value:.4f}"


def _float_and_ptq(ckpt, task, spec, workers: int | None, progress) -> dict:
    """The task's metrics of the PTQ model (fake-quant INT8) and of the same model with quantization off,
    on the val split, on the CPU: `ptq_<key>` and `float_<key>` for every metric key."""
    from optkit.checkpoint import build_model
    from optkit.data import default_workers
    from optkit.quant.compare import task_metrics
    from optkit.quant.quantizers import quantization_off

    label = _label(task)
    workers = workers if workers is not None else default_workers()
    names, classes = list(ckpt.names), len(ckpt.names)
    where = getattr(spec, "val_dir", None) or "the val split"  # a detector's data has splits, no folder

    def metrics(model, stage: str) -> dict:
        loader = task.val_loader(spec, names, ckpt.imgsz, EVAL_BATCH, workers)
        measured = task_metrics(model, loader, task, classes)
        return {f"{stage}_{m.key}": measured[m.key] for m in task.metrics}

    with progress.step(f"{label} of the PTQ model (fake-quant INT8) on {where}"):
        model = build_model(ckpt)
        ptq = metrics(model, "ptq")
    with progress.step(f"{label} of the float model (quantization off) on {where}"):
        with quantization_off(model):
            fp = metrics(model, "float")
    return {**fp, **ptq}


def _label(task) -> str:
    """The short labels of the metrics a report shows, e.g. "top-1", "mAP50-95 and mAP50"."""
    return " and ".join(m.label for m in task.fitness_metrics) or task.fitness_key


def _ptq_images(ckpt) -> int:
    for entry in reversed(ckpt.lineage):
        if entry.get("stage") == "ptq-calibrate":
            return int(entry.get("args", {}).get("num_images", PTQ_IMAGES))
    return PTQ_IMAGES


def _refresh_ranges(best, task, spec, num_images: int) -> tuple[float, dict]:
    """Re-measure best.pt's ONNX activation ranges (its weights moved) and rewrite it atomically; returns
    (seconds, the metrics best.pt holds: its epoch's validation)."""
    import time

    from optkit.checkpoint import load_checkpoint, save_checkpoint
    from optkit.data.subset import evenly_spaced, image_batches
    from optkit.quant.qat import remeasure_onnx_ranges_
    from optkit.stages.export import preprocess_of

    t0 = time.perf_counter()
    ckpt = load_checkpoint(best)
    images = task.image_dataset(spec, ckpt.names, ckpt.imgsz, "train", preprocess_of(ckpt))
    batches = list(image_batches(images, evenly_spaced(len(images), num_images), 32))
    remeasure_onnx_ranges_(ckpt, batches)
    save_checkpoint(ckpt, best)
    return time.perf_counter() - t0, dict(ckpt.metrics or {})
