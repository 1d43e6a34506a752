"""The `optkit ptq-calibrate` flow: fold BN, insert INT8 quantizers, calibrate, measure, write.

1. The model's inference form is fused and ModelOpt quantizers go in (optkit.quant.ptq), except in the
   head's post-processing (a detector's DFL decode, sigmoid, box decode, concat: optkit.quant.float_scope),
   which stays float.
2. They are calibrated on `num_images` images of the train split, as the model's task reads them for
   validation (no augmentation; a detector's labels are not read), spread evenly over the split.
3. Float and fake-quant INT8 are compared on the val split: the metrics the task's fitness is made of
   (`float_<key>`, `int8_<key>`: `top1` for a classifier; `map` (mAP50-95) and `map50` for a detector),
   the task's label-free agreement, the SQNR of every output, and for a detector the SQNR of its decoded
   boxes and of its class scores apart (`sqnr_boxes_db`, `sqnr_scores_db`).
4. Optional: per-layer sensitivity, and `auto_skip` keeping the most sensitive layers in float until the
   task's fitness metric (`fitness_key`: top-1, mAP50-95) drops no more than a budget in points:
   hundredths of the metric, i.e. percentage points of top-1, or 0.5 = 0.005 mAP50-95.
5. The float ONNX graph is run on the calibration images for the onnxruntime flavour's ranges, and the
   checkpoint is written (a foreign file keeps its layout, with ModelOpt's save format beside it).

A model of a task optkit has no task object for (e.g. a TorchScript file whose config names none) is
calibrated and compared on the images of an image folder, read as IMAGE_FOLDER_TASK reads them, labels
unused: by SQNR alone.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError, ConfigError
from optkit.limits import CALIBRATION_BATCH, NUM_IMAGES, options_named
from optkit.quant.config import QuantConfig

if TYPE_CHECKING:
    from optkit.tasks import Task

# fitness: the task's fitness metric on val (top-1, mAP50-95); top1 is its older name, kept for scripts
SENSITIVITY_METRICS = ("sqnr", "fitness", "top1")
MAX_DROP = 100.0  # --auto-skip: points of a metric in [0, 1]
IMAGE_FOLDER_TASK = "classify"  # reads --data for a model whose task has no task object (see above)
VAL_BATCH = 128  # images per batch of the val comparison (decoded once, run many times)
# Calibrating on fewer images than this gets a warning. An activation's calibrated range is about the
# largest value seen over the calibration images, and a new image exceeds the largest of n exchangeable
# ones with probability 1/(n+1): under 32 images, more than 3% of the images met in use (with 1 image,
# half of them) push some activation past its range and are clipped; the histogram methods (percentile,
# entropy, mse) also see too little of the tails to place a clipping point. 32 is one default batch.
FEW_CALIBRATION_IMAGES = 32
FLAGS = {"method": "--method", "percentile": "--percentile", "skip": "--skip"}  # QuantConfig's fields
SKIP_HINT = "; `optkit ptq-calibrate --sensitivity` lists them all"  # ends an unknown --skip's layer list


def quant_config(
    method: str, percentile: float, per_channel: bool, skip: list[str], bias_correction: bool = False
) -> QuantConfig:
    """The QuantConfig of ptq-calibrate's options; a value out of range is worded by its flag."""
    with options_named(FLAGS):
        return QuantConfig(
            method=method,
            percentile=percentile,
            per_channel=per_channel,
            skip=list(skip),
            bias_correction=bias_correction,
        )


@dataclass
class PtqRequest:
    weights: str
    data: str
    num_images: int = 512
    val_images: int | None = None  # val images the float/INT8 comparison runs on; None: the whole split
    quant: QuantConfig = field(default_factory=QuantConfig)
    sensitivity: bool = False
    sensitivity_metric: str = "sqnr"
    auto_skip: float | None = None  # max drop of the task's fitness metric in points (see the module doc)
    act: str | None = None  # swap the architecture's activation (e.g. silu -> relu) before quantizing
    batch_size: int = 32
    output: str | None = None
    trust: bool = False  # foreign pickled checkpoints (optkit.workflows.inputs.open_model)
    code_dir: str | None = None
    model_name: str | None = None  # a plain state_dict file: the zoo model it belongs to

    def __post_init__(self) -> None:
        NUM_IMAGES.check("--num-images", self.num_images)
        if self.val_images is not None:
            NUM_IMAGES.check("--val-images", self.val_images)
        if self.sensitivity_metric not in SENSITIVITY_METRICS:
            raise ConfigError(
                f"--sensitivity-metric must be one of {', '.join(SENSITIVITY_METRICS)}, "
                f"got {self.sensitivity_metric!r}"
            )
        CALIBRATION_BATCH.check("--batch-size", self.batch_size)
        # --auto-skip's range is checked once the model's task (and so the budget's unit) is known

    @property
    def scores_layers(self) -> bool:
        """Sensitivity or auto-skip asks for the task's fitness (labels), not SQNR alone."""
        return self.sensitivity_metric != "sqnr" or self.auto_skip is not None


def _check_budget(req: PtqRequest, data: _Data) -> None:
    """--auto-skip in [0, MAX_DROP], worded in the task's fitness metric and its unit."""
    if req.auto_skip is not None and not 0 <= req.auto_skip <= MAX_DROP:
        raise ConfigError(
            f"--auto-skip takes a {data.label} drop in {data.budget_unit} in [0, {MAX_DROP:g}], "
            f"got {req.auto_skip}"
        )


def _with_scope(quant: QuantConfig, scope) -> QuantConfig:
    """`quant` keeping the head's post-processing (a FloatScope, or None) float."""
    if scope is None:
        return quant
    return QuantConfig(**{**quant.as_dict(), "float_modules": list(scope.modules)})


def _with_quantizers(fused, quant: QuantConfig):
    """A copy of `fused` with INT8 quantizers; a --skip name no layer has is refused in its flag's words."""
    from optkit.quant.quantizers import UnknownLayerError, insert_quantizers

    try:
        return insert_quantizers(copy.deepcopy(fused), quant)
    except UnknownLayerError as e:
        raise UnknownLayerError(e.layer, e.known, SKIP_HINT).for_option(FLAGS[e.field]) from None


def run_ptq(req: PtqRequest, progress=None) -> dict:
    """`progress`: an optkit.report.progress display (default: quiet). Every input is checked (the
    file, the data, --act, --skip, ModelOpt installed) before the first step that prints a line."""
    from optkit.checkpoint import build_model, save_checkpoint
    from optkit.quant.bias_correction import correct_biases
    from optkit.quant.float_scope import float_scope
    from optkit.quant.ptq import (
        check_rebuilds,
        fused_for_quantization,
        onnx_ranges_of,
        quantized_checkpoint,
        with_config,
    )
    from optkit.quant.quantizers import quantized_layers
    from optkit.report.progress import Quiet
    from optkit.tasks import get_task
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import file_size, stage_output

    progress = progress or Quiet()
    target = stage_output(req.weights, "int8", req.output)
    src = open_model(
        req.weights,
        command="ptq-calibrate",
        trust=req.trust,
        code_dir=req.code_dir,
        model_name=req.model_name,
    )
    data = _dataset(src, req)
    _check_budget(req, data)
    result: dict = {"source": req.weights, "output": str(target), "method": req.quant.method, "act": req.act}
    result["shown"] = [{"key": m.key, "label": m.label, "percent": m.percent} for m in data.shown]
    with progress.step("building the model and inserting INT8 quantizers (ModelOpt)", line=False):
        model, ckpt, original = _float_model(src, req)
        fused, fuse_transform = fused_for_quantization(model, src.imgsz, foreign=src.foreign is not None)
        scope = float_scope(fused)
        quant = _with_scope(req.quant, scope)
        qmodel = _with_quantizers(fused, quant)
    if scope is not None:
        result["float_scope"] = scope.as_dict()
    images = _images(data, req, progress)
    result["num_images"] = sum(len(b) for b in images.calib)
    _warn_few_images(result, len(data.train), req, progress)
    if original is not None:
        with progress.step(f"{data.label} before --act {req.act} on {data.val_images} val images"):
            result[f"original_{data.key}"] = data.score(build_model(original), images.val)
    result["calibration_s"] = _calibrate(qmodel, quant, images.calib, progress)
    if req.sensitivity or req.auto_skip is not None:
        _sensitivity(qmodel, data, images, req, result, progress)
    result["skipped"] = list(req.quant.skip) + result.get("auto_skipped", [])
    final_config = QuantConfig(**{**quant.as_dict(), "skip": result["skipped"]})
    qmodel = with_config(fused, qmodel, final_config)
    if final_config.bias_correction:
        with progress.step(f"correcting biases on {result['num_images']} images"):
            result["bias_correction"] = asdict(correct_biases(qmodel, images.calib))
    with progress.step(f"comparing float and INT8 on {data.val_images} val images"):
        result.update(_compare(fused, qmodel, data, images))
    metrics = _lineage_metrics(result, data)
    if ckpt is None:
        _save_foreign(src, fused, qmodel, target, _args(req), metrics)
    else:
        t0 = time.perf_counter()
        with progress.step(f"measuring ONNX activation ranges on {result['num_images']} images"):
            outputs = tuple(get_task(ckpt.task).output_names)  # the names the export gives them
            ranges = onnx_ranges_of(qmodel, src.imgsz, images.calib, outputs)
        result["ranges_s"] = time.perf_counter() - t0
        new = quantized_checkpoint(ckpt, qmodel, final_config, ranges, fuse_transform)
        new.add_lineage("ptq-calibrate", {**_args(req), "source": req.weights}, metrics)
        check_rebuilds(new, qmodel, images.calib[0])
        save_checkpoint(new, target)
    result.update(
        quantized_layers=len(quantized_layers(qmodel)),
        bytes_before=file_size(req.weights),
        bytes_after=file_size(target),
    )
    return result


def _save_foreign(src, fused, qmodel, target, args: dict, metrics: dict) -> None:
    """A foreign file keeps its layout with the fused float module as `model` (its own tools still load
    it), plus ModelOpt's save format beside it (optkit.quant.ptq.modelopt_save_format)."""
    from optkit.foreign.checkpoint import save_foreign
    from optkit.quant.ptq import modelopt_save_format

    obj = src.foreign.with_module(fused)
    if not isinstance(obj, dict):
        raise ConfigError(f"{src.path} is a bare pickled module: there is no place to store the quantizers")
    obj.update(modelopt_save_format(qmodel))
    save_foreign(src.with_lineage(obj, "ptq-calibrate", args, metrics), target)


@dataclass
class _Data:
    """The dataset as the model's task reads it, both splits scanned (a split without images is
    refused before any work)."""

    task: Task  # reads --data
    scorer: Task | None  # reads the model's outputs and scores them; None: compared by SQNR alone
    num_classes: int
    train: object  # the train split as the model sees it at validation: dataset[i] -> (image, target)
    val: object
    val_images: int  # compared on: the val split, or --val-images of it

    @property
    def key(self) -> str:
        """The fitness metric's key: the result's `float_<key>`, `int8_<key>` (top1 for a classifier)."""
        return self.task.fitness_key

    @property
    def metric(self):
        """The fitness metric (optkit.tasks.Metric): top-1 for a classifier, mAP50-95 for a detector."""
        from optkit.tasks import Metric

        return next((m for m in self.task.metrics if m.key == self.key), Metric(self.key, self.key))

    @property
    def label(self) -> str:
        """The fitness metric's short label, e.g. "top-1", "mAP50-95"."""
        return self.metric.label

    @property
    def budget_unit(self) -> str:
        """How a drop of the fitness metric is counted: hundredths of it, named as users know them."""
        if self.metric.percent:
            return "percentage points"
        return f"points (hundredths of {self.label}: 0.5 = 0.005)"

    @property
    def shown(self) -> tuple:
        """The metrics float and INT8 are compared on: those the task's fitness is made of, the fitness
        metric first (top-1; mAP50-95 and mAP50)."""
        return tuple(self.task.fitness_metrics)

    def metrics(self, model, val: list) -> dict | None:
        """The task's metrics of `model` on the val batches; None when nothing scores the model."""
        from optkit.quant.compare import task_metrics

        if self.scorer is None:
            return None
        return task_metrics(model, val, self.scorer, self.num_classes)

    def score(self, model, val: list) -> float | None:
        """The fitness metric of `model` on the val batches (what budgets are counted in); None when
        nothing scores the model."""
        metrics = self.metrics(model, val)
        return None if metrics is None else float(metrics[self.key])

    def read(self, output):
        """A model's output as the scoring task reads it (a detector's [B, 4 + nc, N]); None without one."""
        return None if self.scorer is None else self.scorer.read_outputs(output, self.num_classes)


@dataclass
class _Images:
    calib: list  # image batches from the train split
    val: list  # (images, targets) batches of the val images compared on


def _tasks(src) -> tuple[Task, Task | None]:
    """(the task that reads --data, the task that scores the model's outputs or None): the model's task,
    or for a task optkit has no object for, IMAGE_FOLDER_TASK's images and no scoring."""
    from optkit.tasks import get_task

    try:
        task = get_task(src.task)
    except CheckpointError:  # not a registered task
        return get_task(IMAGE_FOLDER_TASK), None
    return task, task


def _dataset(src, req: PtqRequest) -> _Data:
    """The data, checked against the model."""
    from optkit.data import IMAGENET_MEAN, IMAGENET_STD
    from optkit.measure.validate import check_classes

    task, scorer = _tasks(src)
    spec = task.resolve_data(req.data)
    if src.kind == "state_dict" and len(spec.names) == src.num_classes:
        src.names = src.ckpt.names = list(spec.names)  # a state_dict has no class names: the data's
    if scorer is not None:
        check_classes(spec, src.names)
    elif req.scores_layers:
        raise ConfigError(
            f"{req.weights} is a {src.task} model, which optkit has no task to score: "
            f"--sensitivity-metric {req.sensitivity_metric} and --auto-skip need a classifier or a "
            "detector; the SQNR sensitivity works for any model"
        )
    names = list(src.names) if scorer is not None else list(spec.names)  # the folders to read
    pre = src.preprocess or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    # made now (file names scanned, nothing decoded) so that a split without images is refused first
    train = task.image_dataset(spec, names, src.imgsz, "train", pre)
    val = task.image_dataset(spec, names, src.imgsz, "val", pre)
    return _Data(task, scorer, src.num_classes, train, val, min(len(val), req.val_images or len(val)))


def _images(data: _Data, req: PtqRequest, progress) -> _Images:
    """The calibration and val images, preprocessed as the model expects, decoded once (they are run
    many times)."""
    calib = _calibration_batches(data.train, req.num_images, req.batch_size, progress)
    return _Images(calib, _val_batches(data.val, data.task.collate, req.val_images, progress))


def _calibration_batches(dataset, num_images: int, batch_size: int, progress) -> list:
    """`num_images` images spread evenly over the train split, in batches."""
    from optkit.data.subset import evenly_spaced, image_batches

    indices = evenly_spaced(len(dataset), num_images)
    batches = []
    with progress.step(f"reading {len(indices)} calibration images", total=len(indices)) as step:
        for x in image_batches(dataset, indices, batch_size):
            batches.append(x)
            step.advance(len(x))
    return batches


def _val_batches(dataset, collate, limit: int | None = None, progress=None) -> list:
    """The val split (or `limit` images spread evenly over it, so every class of the class-sorted
    folder is in) as (images, targets) batches, collated as the task does."""
    from optkit.data.subset import evenly_spaced
    from optkit.report.progress import Quiet

    indices = evenly_spaced(len(dataset), limit or len(dataset))
    batches = []
    with (progress or Quiet()).step(f"reading {len(indices)} val images", total=len(indices)) as step:
        for i in range(0, len(indices), VAL_BATCH):
            images, targets = collate([dataset[j] for j in indices[i : i + VAL_BATCH]])
            batches.append((images, targets))
            step.advance(len(images))
    return batches


def _warn_few_images(result: dict, available: int, req: PtqRequest, progress) -> None:
    """A warning (stderr, and `notes` in the result) when calibration rests on too few images."""
    n = result["num_images"]
    if n >= FEW_CALIBRATION_IMAGES:
        return
    why = f"--num-images {req.num_images}" if n == req.num_images else f"the train split has only {available}"
    message = (
        f"calibrating on {n} image{'s' if n > 1 else ''} ({why}): ranges from fewer than "
        f"{FEW_CALIBRATION_IMAGES} images clip many other images' activations; use a few hundred "
        "(default 512)"
    )
    result.setdefault("notes", []).append(message)
    progress.warn(message)


def _float_model(src, req: PtqRequest):
    """(the float model to quantize, the optkit checkpoint it comes from or None for a foreign module,
    the checkpoint before --act swapped its activations or None)."""
    from optkit.checkpoint import build_model
    from optkit.quant.ptq import with_activation
    from optkit.quant.quantizers import is_quantized, quantize_entry

    ckpt, original = src.ckpt, None
    if ckpt is not None and quantize_entry(ckpt.transforms) is not None:
        raise ConfigError(f"{req.weights} is already quantized (ptq-calibrate takes a float checkpoint)")
    if req.act:
        if ckpt is None:
            raise ConfigError(
                "--act rebuilds the architecture with another activation: it needs an optkit checkpoint"
            )
        original, ckpt = ckpt, with_activation(ckpt, req.act)
    model = build_model(ckpt) if ckpt is not None else src.model()
    if ckpt is None and is_quantized(model):
        raise ConfigError(f"{req.weights} is already quantized (ptq-calibrate takes a float model)")
    return model, ckpt, original


def _calibrate(qmodel, config: QuantConfig, calib: list, progress) -> float:
    """Calibrate qmodel's quantizers in place on the batches; returns the seconds it took."""
    from optkit.quant.ptq import calibrate_on

    n = sum(len(x) for x in calib)
    t0 = time.perf_counter()
    with progress.step(f"calibrating ({config.method}) on {n} images", total=n) as step:
        calibrate_on(qmodel, config, calib, on_batch=step.advance)
    return time.perf_counter() - t0


def _sensitivity(qmodel, data: _Data, images: _Images, req: PtqRequest, result: dict, progress) -> None:
    """Per-layer sensitivity (label-free SQNR on the first calibration images, a detector's by its worse
    part, boxes or scores; or the task's fitness metric on the val images), and with --auto-skip the
    layers kept float, most sensitive first, each revert checked by the fitness metric on val, until it
    is within the budget (points, see the module doc)."""
    from optkit.quant.quantizers import quantization_off, quantized_layers
    from optkit.quant.sensitivity import auto_skip, first_images, sensitivity

    def fitness_of(model):
        return data.score(model, images.val)

    t0 = time.perf_counter()
    layers = len(quantized_layers(qmodel))
    by_fitness = req.sensitivity_metric != "sqnr"
    metric = data.label if by_fitness else "sqnr"
    with progress.step(f"per-layer sensitivity ({metric}) of {layers} layers"):
        ranked = sensitivity(
            qmodel, first_images(images.calib), fitness_of if by_fitness else None,
            read=data.read if data.scorer is not None else None, num_classes=data.num_classes,
        )  # fmt: skip
    result["sensitivity"] = [r.as_dict(data.key) for r in ranked]
    result["sensitivity_s"] = time.perf_counter() - t0
    if req.auto_skip is not None:
        unit = "pp" if data.metric.percent else "points"
        with progress.step(
            f"--auto-skip: keeping layers float until {data.label} drops <= {req.auto_skip:g} {unit}"
        ):
            with quantization_off(qmodel):
                float_fitness = fitness_of(qmodel)
            skipped, _ = auto_skip(qmodel, ranked, float_fitness, req.auto_skip, fitness_of)
        result["auto_skipped"] = skipped


def _compare(fused, qmodel, data: _Data, images: _Images) -> dict:
    """Float vs INT8 on the val images: the metrics the task's fitness is made of, of each (None without
    a scoring task), the task's agreement, the output SQNR and, for an output that splits (a detector's
    boxes and scores), each part's SQNR."""
    from optkit.quant.compare import fidelity

    f = fidelity(fused, qmodel, [x for x, _ in images.val], data.scorer, data.num_classes)
    figures = {}
    for name, model in (("float", fused), ("int8", qmodel)):
        metrics = data.metrics(model, images.val) or {}
        figures.update({f"{name}_{m.key}": metrics.get(m.key) for m in data.shown})
    parts = {f"sqnr_{name}_db": v for name, v in f.parts_sqnr_db.items()}
    return {**figures, "top1_agreement": f.agreement, "sqnr_db": f.sqnr_db, **parts, "val_images": f.images}


def _lineage_metrics(result: dict, data: _Data) -> dict:
    """The comparison's figures the output's lineage keeps: float and INT8 metrics, agreement, SQNR(s)."""
    keys = [f"{stage}_{m.key}" for m in data.shown for stage in ("float", "int8")]
    keys += ["top1_agreement", "sqnr_db", *(k for k in result if k.startswith("sqnr_") and k != "sqnr_db")]
    return {k: result[k] for k in keys}


def _args(req: PtqRequest) -> dict:
    return {
        "data": req.data,
        "num_images": req.num_images,
        **req.quant.as_dict(),
        "sensitivity": req.sensitivity,
        "auto_skip": req.auto_skip,
        "act": req.act,
    }
