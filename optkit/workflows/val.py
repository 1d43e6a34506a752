"""The `optkit val` flow: open the model file, ask its task for the val split and the metrics, measure.

A model file is an optkit checkpoint, a trusted foreign model (--trust), a plain state_dict (--model) or
an .onnx from `optkit export` (run by ONNX Runtime on the CPU); which one is told by the file's bytes
(optkit.formats.model_format), not its name. The measuring is optkit.measure.validate's.

An .onnx exported with --nms (its metadata records `nms`) returns final detections: it is scored as it is
(optkit.measure.detect_eval.FinalDetections), its own NMS settings in force; the result says so (`note`)
when its conf is above val's 0.001, as its mAP is then lower than the model's at val's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from optkit.errors import CheckpointError, ConfigError
from optkit.limits import BATCH, MAX_DET, SCORE, options_named

PRECISION_REFUSAL = "--precision sets OpenVINO's inference precision; it applies to an OpenVINO IR only"
# the fields onnxrt's input-size refusal names -> the flags (--dynamic is export's: a graph for any size)
ONNX_SIZE_FLAGS = {"imgsz": "--imgsz", "dynamic": "--dynamic"}


@dataclass
class ValRequest:
    weights: str  # the model file
    data: str | None = None  # --data: builtin:NAME, a class-folder tree, a data.yaml; None: the task's own
    imgsz: int | None = None  # pixels; None: the model's own
    batch_size: int = 128
    workers: int | None = None  # loader processes; None: optkit.data.default_workers()
    device: str = ""
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into
    conf: float | None = None  # detectors: score threshold; None: the task's validation default
    iou: float | None = None  # detectors: NMS IoU threshold
    max_det: int | None = None  # detectors: detections kept per image
    skip_bad_labels: bool = False  # detectors: drop images with bad label rows
    precision: str | None = None  # OpenVINO IR: INFERENCE_PRECISION_HINT; None: the CPU's default

    def __post_init__(self) -> None:
        if self.precision is not None:
            from optkit.ovrt import PRECISIONS

            if self.precision not in PRECISIONS:
                raise ConfigError(
                    f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
                )
        BATCH.check("--batch-size", self.batch_size)  # the CLI's bound and words (optkit.limits)
        for flag, value, bounds in (("--conf", self.conf, SCORE), ("--iou", self.iou, SCORE),
                                    ("--max-det", self.max_det, MAX_DET)):  # fmt: skip
            if value is not None:
                bounds.check(flag, value)

    def eval_options(self) -> dict:
        """The thresholds given (a detector's evaluation reads them; the defaults are the task's)."""
        given = {"conf": self.conf, "iou": self.iou, "max_det": self.max_det}
        return {k: v for k, v in given.items() if v is not None}

    def data_for(self, task) -> str:
        return self.data or task.default_data

    def resolve(self, task, progress):
        """The task's dataset, a bad label file worded with the flag that drops such images."""
        from optkit.workflows.inputs import bad_labels_flag

        skip = {"skip_bad_labels": True} if self.skip_bad_labels else {}
        with bad_labels_flag():
            return task.resolve_data(self.data_for(task), log=progress.line, splits=("val",), **skip)


def run_val(req: ValRequest, progress=None) -> dict:
    """{"weights", "data", ("runtime": "onnxruntime" for an ONNX file,) "split", "imgsz", "device",
    <the task's metrics with "loss" and "images">, "seconds", "images_per_s", "task"}. `progress` is
    where a built-in dataset's generation (or the wait for it) is reported; val shows no other steps."""
    from optkit.formats import model_format
    from optkit.ovrt import is_ir
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    if is_ir(req.weights):
        return _val_openvino(req, progress)
    if req.precision is not None:
        raise ConfigError(
            "--precision sets OpenVINO's inference precision; it applies to an OpenVINO IR only"
        )
    if model_format(req.weights) == "onnx":  # by content: a checkpoint renamed .onnx is still one
        return _val_onnx(req, progress)
    return _val_torch(req, progress)


def _val_torch(req: ValRequest, progress) -> dict:
    from optkit.measure.validate import check_classes, measure_on_val
    from optkit.models.imgsz import check_imgsz
    from optkit.workflows.inputs import open_model

    src = open_model(
        req.weights, command="val", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    task = task_to_measure(src.task, src.path, src.arch)
    imgsz = check_imgsz(req.imgsz or src.imgsz, src.stride, "--imgsz")
    data = req.resolve(task, progress)
    names = src.names
    if src.kind == "state_dict" and len(data.names) == len(names):
        names = list(data.names)  # a state_dict records no class names: take the dataset's, in its order
    check_classes(data, names)
    result = measure_on_val(
        src.model(), task, data, names, imgsz, req.batch_size, req.workers, req.device, src.preprocess,
        eval_options=req.eval_options(),
    )  # fmt: skip
    return {"weights": str(req.weights), "data": req.data_for(task), **result, "task": task.name}


def _val_onnx(req: ValRequest, progress) -> dict:
    """An .onnx from optkit export, on ONNX Runtime's CPU provider."""
    from optkit.onnxrt import load_optkit_onnx

    _cpu_only(req, "runs on ONNX Runtime's CPU provider")
    model, meta = load_optkit_onnx(req.weights)
    return _val_exported(req, progress, model, meta, "onnxruntime", "ONNX model")


def _val_openvino(req: ValRequest, progress) -> dict:
    """An OpenVINO IR from optkit export --format openvino, on the CPU; `runtime` names the precision
    its float layers ran in (--precision, else the CPU's default: bf16 where the CPU has it)."""
    from optkit.ovrt import IrFileError, OvModel

    _cpu_only(req, "runs on OpenVINO's CPU plugin")
    model = OvModel(req.weights, precision=req.precision)
    names = model.metadata.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise IrFileError(f"{req.weights} was not exported by optkit (no class names in its rt_info)")
    runtime = f"openvino ({model.runtime_precision()})"
    return _val_exported(req, progress, model, model.metadata, runtime, "OpenVINO IR")


def _cpu_only(req: ValRequest, what: str) -> None:
    from optkit.errors import DeviceError

    if req.device.strip().lower() not in ("", "auto", "cpu"):
        raise DeviceError(f"{req.weights} {what}; drop --device {req.device} or use cpu")


def _val_exported(req: ValRequest, progress, model, meta: dict, runtime: str, kind: str) -> dict:
    """An exported model (OrtModel or OvModel): class names, input size, task and preprocessing come
    from the file's metadata."""
    from optkit.measure.validate import check_classes, measure_on_val
    from optkit.models.imgsz import check_imgsz

    task = task_to_measure(onnx_task(meta), req.weights, meta.get("arch") or kind)
    size = req.imgsz or meta.get("imgsz") or (model.fixed_size() or (None,))[0]
    if not isinstance(size, int):
        raise ConfigError(f"{req.weights} records no input size in its metadata; give --imgsz")
    size = check_imgsz(size, meta["stride"] if isinstance(meta.get("stride"), int) else 32, "--imgsz")
    with options_named(ONNX_SIZE_FLAGS):
        model.check_input_size(size)
    model, nms_facts = _with_graph_nms(model, meta, req)
    data = req.resolve(task, progress)
    check_classes(data, meta["names"], kind)
    pre = meta.get("preprocess") if isinstance(meta.get("preprocess"), dict) else None
    result = measure_on_val(
        model, task, data, meta["names"], size, req.batch_size, req.workers, "cpu", pre,
        eval_options=req.eval_options(),
    )  # fmt: skip
    facts = {"weights": str(req.weights), "data": req.data_for(task), "runtime": runtime}
    return {**facts, **result, "task": task.name, **nms_facts}


def _with_graph_nms(model, meta: dict, req: ValRequest) -> tuple:
    """(the model to measure, facts for the result): a file whose graph ends in NMS is measured as
    FinalDetections with its own settings ("nms_in_graph", and a "note" when its conf is above val's)."""
    from optkit.measure.detect_eval import VAL_CONF, FinalDetections
    from optkit.stages.onnx_nms import nms_settings

    nms = nms_settings(meta)
    if nms is None:
        return model, {}
    if req.iou is not None and req.iou != nms.iou:
        raise ConfigError(
            f"{req.weights} has NMS in its graph with IoU {nms.iou:g} (fixed at export); --iou {req.iou:g} "
            "cannot change it: drop --iou, or export again with --iou"
        )
    facts = {"nms_in_graph": nms.metadata()}
    conf = req.conf if req.conf is not None else VAL_CONF
    if nms.conf > VAL_CONF and conf < nms.conf:
        facts["note"] = (
            f"the file's NMS keeps scores > {nms.conf:g} (its --conf at export), one class per box: its mAP "
            f"is lower than the model's at val's conf {VAL_CONF:g}; export without --nms to measure the model"
        )
    return FinalDetections(model, nms, len(meta["names"])), facts


def task_to_measure(name: str, path, arch: str, command: str = "val"):
    """The registered task of a model that `command` measures; a task this optkit does not know is
    refused in one line, naming the command."""
    from optkit.tasks import get_task

    try:
        return get_task(name)
    except CheckpointError:
        raise ConfigError(
            f"{command}: {path} is a {name} model ({arch}); this optkit cannot measure {name} models yet "
            "(it measures image classification and detection)"
        ) from None


def onnx_task(meta: dict) -> str:
    """The task an exported file names; files that name none are read as checkpoints that name none."""
    from optkit.checkpoint import Checkpoint

    task = meta.get("task")
    return task if isinstance(task, str) and task else Checkpoint.task
