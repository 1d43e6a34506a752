"""export: a model as one self-contained ONNX file, checked against PyTorch with ONNX Runtime (README).

Exporter: torch.onnx's TorchScript-based exporter (`dynamo=False`). It gives one clean single-file graph
for every zoo model and for fused, structurally pruned, sparse and fp16-stored checkpoints (rebuilt in
fp32 by `build_model`), folds eval-mode BatchNorm into the convs, and is the exporter ModelOpt's
INT8 QDQ export needs, so all ONNX files optkit writes come from the same one. It supports opsets
11-20 here (`MIN_OPSET`, `MAX_OPSET`).

The graph: input `images` (N, 3, H, W) float32 (float16 with `half`); its outputs are named by the
model's task (`ExportConfig.output_names`, `Task.output_names`: a classifier's one output is `logits`),
and output0, output1, ... (as YOLOv5 / Ultralytics name theirs) when the task is not known here or names
a different number of outputs than the model returns. The graph's outputs are the tensors the model
returns, flattened as torch.onnx flattens them (tuples, lists and dicts, depth first: `flat_tensors`); a
foreign detector is handed to the export as its detections alone (optkit.stages.task_output, one output
[B, 4 + nc, N], as Ultralytics exports its own). With `dynamic`, N, H and W are free (named
batch/height/width): every zoo model is fully convolutional with adaptive pooling, and the parity check
runs a second batch size and a second input size to prove it.

Steps: trace in memory -> onnxslim (optional; on failure the unsimplified graph is kept and the report
says why) -> metadata_props -> onnx.checker -> a temp file in the target folder -> parity check on that
file with ONNX Runtime -> rename into place. Any failure removes the temp file: no output is written,
and the source is never touched. The weights travel inside the one file (no external data); a model
whose file would pass protobuf's 2 GB limit is refused.

Parity: the PyTorch model (fp32, CPU) and ONNX Runtime (CPU provider) run the same seeded standard-normal
inputs, and optionally real validation images, compared on every output. max |Δ| is measured in
absolute terms and relative to the largest |output| of PyTorch (as `fuse` does); above `atol` the export
fails (`ParityError`). Top-1 agreement is reported when the model has one (N, classes) output. A task
whose one output holds parts of different scales (`DECODED_PARTS`: a detector's box pixels and class
probabilities) has each part measured against its own scale, and max_rel is the worst part's.

NMS in the graph (`ExportConfig.nms`, detectors; optkit.stages.onnx_nms): the nodes are appended after
`rewrite`, so an INT8 graph gets them too. The raw graph (in memory) is then what is compared with
PyTorch, and the written file's detections are compared with optkit's NMS (optkit.measure.nms) of the raw
graph's output on the real images: same count, each matched (same class, IoU >= NMS_MIN_IOU) with the same
score (NMS_SCORE_ATOL); otherwise nothing is written.

Messages name ExportConfig's fields, never a command's flags: errors about a field carry it as `field`
and the rest of the sentence as `detail` (optkit.limits.FieldError; NoCudaError for `half` without CUDA),
and a parity failure carries its figures (ParityError), so the flow that owns the flags words them
(docs/architecture.md, Layers).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import ConfigError, DeviceError, OptkitError
from optkit.limits import ATOL, TIMED_BATCH, FieldError

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from optkit.checkpoint import Checkpoint

MIN_OPSET, MAX_OPSET = 11, 20  # what the TorchScript exporter supports, from opset 11 (Clip with inputs)
MAX_BYTES = 2**31 - 1  # protobuf's limit for one serialized message; larger needs external data files
INPUT_NAME = "images"
INPUT_AXES = {0: "batch", 2: "height", 3: "width"}  # with `dynamic`; every output gets {0: "batch"}
ATOL_FP32, ATOL_FP16 = 1e-4, 1e-2  # default tolerances: max |Δ| / max |output|
# The parts of a task's one output that the parity check measures apart, each against its own scale:
# (first, end) channels of axis 1. A detector's boxes are pixels (hundreds) and its scores
# probabilities (<= 1): measured together, any score error would vanish under the box scale.
DECODED_PARTS = {"detect": {"boxes": (0, 4), "scores": (4, None)}}
NMS_SCORE_ATOL = 1e-5  # --nms check: max |score Δ| between the graph's NMS and optkit's on the same output
NMS_MIN_IOU = 0.99  # --nms check: a graph detection matches optkit's when IoU >= this (same class)


class ExportError(OptkitError):
    """The model could not be exported, or ONNX Runtime's output differs from PyTorch's."""


class ParityError(ExportError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance; nothing was written.
    `summary`: the figures in one sentence; `max_rel`: the worst max |Δ| / max |output|; `simplified`:
    onnxslim's graph was written; `int8_target`: set for a quantized graph."""

    def __init__(self, summary: str, max_rel: float, simplified: bool, int8_target: str | None) -> None:
        self.summary, self.max_rel = summary, max_rel
        self.simplified, self.int8_target = simplified, int8_target
        note = "; the graph was simplified by onnxslim" if simplified and not int8_target else ""
        super().__init__(summary + note)


class NoCudaError(DeviceError):
    """`half` asks for an fp16 graph, traced on CUDA, and this machine has none. Carries `field` ("half")
    and `detail` (the words after it), as optkit.limits.FieldError does."""

    field = "half"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.field} {detail}")


@dataclass
class ExportConfig:
    imgsz: int | None = None  # pixels, square input side; None: the checkpoint's (export_checkpoint)
    batch: int = 1  # batch size of the example input (the fixed batch unless dynamic)
    opset: int = 17
    dynamic: bool = False  # free batch, height and width
    simplify: bool = True  # run onnxslim
    half: bool = False  # fp16 graph; needs CUDA
    check: bool = True  # compare ONNX Runtime with PyTorch
    atol: float | None = None  # max |Δ| / max |output|; None: 1e-4, or 1e-2 with half
    seed: int = 0  # seeds the parity check's random inputs
    int8_target: str | None = None  # INT8: onnxruntime, tensorrt or openvino (optkit.quant.qdq)
    silu_form: str = "auto"  # onnxruntime INT8: auto, quickgelu or qlinear (optkit.quant.silu_form)
    # one name per output tensor (the task's: optkit.tasks); None, or a count that differs from the
    # model's outputs: output0, output1, ... (export_checkpoint fills in the checkpoint's task's)
    output_names: tuple[str, ...] | None = None
    task: str | None = None  # the model's task (optkit.tasks): how the check reads its output
    nms: Any = None  # an optkit.stages.onnx_nms.NmsConfig: NMS in the graph (detectors); None: raw output

    def tolerance(self) -> float:
        return self.atol if self.atol is not None else (ATOL_FP16 if self.half else ATOL_FP32)

    def validate(self) -> None:
        op = self.opset
        if isinstance(op, bool) or not isinstance(op, int) or not MIN_OPSET <= op <= MAX_OPSET:
            raise FieldError(
                "opset",
                f"{op} is not supported: choose {MIN_OPSET} to {MAX_OPSET} "
                f"(the range of torch's TorchScript ONNX exporter; default 17)",
            )
        TIMED_BATCH.check("batch", self.batch)  # the graph's batch dimension
        if self.int8_target is not None:
            from optkit.quant.config import TARGETS

            if self.int8_target not in TARGETS:
                detail = f"must be one of {', '.join(TARGETS)}, got {self.int8_target!r}"
                raise FieldError("int8_target", detail)
        if self.silu_form != "auto":
            from optkit.quant.silu_form import check_form

            check_form(self.silu_form)
        if self.atol is not None:
            ATOL.check("atol", self.atol)  # > 0; NaN fails too
        if self.nms is not None:
            from optkit.stages.onnx_nms import NMS_TASKS

            if self.task is not None and self.task not in NMS_TASKS:  # None: not known yet (a request)
                detail = f"needs a detector (boxes to suppress); this is a {self.task} model"
                raise FieldError("nms", detail)
            self.nms.validate()


@dataclass
class ParityCase:
    input: str  # "random" (seeded standard-normal) or "val" (real validation images)
    shape: list[int]  # of the input batch; for "val": (images, 3, H, W) over all batches
    max_abs: float  # max |ORT - PyTorch| over all outputs
    max_rel: float  # max_abs / max |PyTorch output| (over all outputs)
    top1_agreement: float | None  # fraction of images with the same argmax; None unless one (N, C) output
    # DECODED_PARTS of the task's output, each {"max_abs", "scale" (max |PyTorch|), "max_rel"}; max_rel
    # above is then the worst part's
    parts: dict | None = None
    # input "nms": the graph's detections vs optkit's NMS on the raw graph's output (_nms_case)
    nms: dict | None = None

    def label(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        if self.input == "nms":
            return f"NMS on val images ({self.shape[0]})"
        return f"{self.input} {dims}" if self.input == "random" else f"val images ({self.shape[0]})"


@dataclass
class ExportReport:
    output: str
    opset: int
    dynamic: bool
    half: bool
    imgsz: int
    batch: int
    input_shape: list  # as written in the graph: ints, or names of dynamic dims
    simplified: bool  # onnxslim ran and its graph was kept
    simplify_error: str | None  # why onnxslim failed (the unsimplified graph was written)
    nodes_before: int  # graph nodes after torch's export
    nodes_after: int  # graph nodes in the written file
    bytes: int  # file size
    export_s: float  # seconds: trace + simplify + serialize (not the parity check)
    atol: float | None  # the tolerance the check applied; None when not checked
    cases: list[ParityCase] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # metadata_props written
    int8: dict | None = None  # quantized checkpoints: target, QDQ placement and ONNX Runtime's coverage
    outputs_note: str | None = None  # what the graph's output holds when the task chose it (task_output)
    images_source: str | None = None  # where the real images of the check came from (set by the flow)

    def worst(self, kind: str | None = None) -> ParityCase | None:
        """The case with the largest max_rel among the output comparisons (not the NMS check)."""
        cases = [c for c in self.cases if c.input != "nms" and (kind is None or c.input == kind)]
        return max(cases, key=lambda c: (math.isnan(c.max_rel), c.max_rel)) if cases else None

    def as_dict(self) -> dict:
        d = asdict(self)
        val = self.worst("val")
        random_agreement = [
            c.top1_agreement for c in self.cases if c.input == "random" and c.top1_agreement is not None
        ]
        d["size_mb"] = self.bytes / 1e6  # bytes to MB (10^6)
        outputs = [c for c in self.cases if c.input != "nms"]
        d["checked"] = bool(self.cases)
        d["max_abs"] = max((c.max_abs for c in outputs), default=None)
        d["max_rel"] = max((c.max_rel for c in outputs), default=None)
        for part in sorted({p for c in outputs for p in (c.parts or {})}):  # e.g. boxes_max_rel
            d[f"{part}_max_rel"] = max(c.parts[part]["max_rel"] for c in outputs if c.parts)
        d["nms_check"] = next((c.nms for c in self.cases if c.input == "nms"), None)
        d["top1_agreement"] = min(random_agreement, default=None)  # worst over the random inputs
        d["val_top1_agreement"] = val.top1_agreement if val else None
        d["val_images"] = val.shape[0] if val else None
        return d


def export_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    config: ExportConfig,
    metadata: dict[str, Any] | None = None,
    images: Iterable[torch.Tensor] | None = None,
    rewrite: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    reference: nn.Module | None = None,
) -> ExportReport:
    """Write `model` to `output` as ONNX and check it; return what was done. The model is not modified.

    metadata: written as `metadata_props` (lists/dicts as JSON, the rest as text). images: batches of
    preprocessed real images (N, 3, imgsz, imgsz) for the parity check (e.g. `ImageBatches`).
    rewrite: applied to the traced (and simplified) graph, e.g. optkit.quant's QDQ insertion.
    reference: the model the file is checked against (default: `model`).
    With `config.nms` the NMS nodes go after `rewrite` (optkit.stages.onnx_nms); the check then compares
    the raw graph (in memory) with PyTorch, and the file's detections with optkit's NMS of the raw
    graph's output on `images`.
    """
    import onnx

    from optkit.onnxrt import OrtModel

    config.validate()
    if config.imgsz is None:
        raise ConfigError("export needs an input size (imgsz)")
    if config.nms is not None and config.task is None:
        raise FieldError("nms", "needs a detector (boxes to suppress); this model names no task")
    target = Path(output)
    t0 = time.perf_counter()
    proto, nodes_before, simplify_error, imgsz = float_graph(model, config)
    if rewrite is not None:
        proto = rewrite(proto)
    raw_proto = proto
    metadata = dict(metadata or {})
    if config.nms is not None:
        proto, metadata = _with_nms(proto, config, metadata)
    reference = copy.deepcopy(reference if reference is not None else model).float().eval().cpu()
    props = {k: v if isinstance(v, str) else _text(v) for k, v in metadata.items()}
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ExportError(f"the exported graph is not valid ONNX: {_first_line(e)}") from None
    if len(data) > MAX_BYTES:
        raise ExportError(_too_big(len(data)))
    export_s = time.perf_counter() - t0

    report = ExportReport(
        output=str(target),
        opset=config.opset,
        dynamic=config.dynamic,
        half=config.half,
        imgsz=imgsz,
        batch=config.batch,
        input_shape=[d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim],
        simplified=config.simplify and simplify_error is None,
        simplify_error=simplify_error,
        nodes_before=nodes_before,
        nodes_after=len(proto.graph.node),
        bytes=len(data),
        export_s=export_s,
        atol=config.tolerance() if config.check else None,
        metadata=props,
    )
    with _staged_file(target) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if config.check:
            ort_model = OrtModel(tmp, session=_session(tmp, config.half))
            if config.nms is None:
                report.cases = _parity(reference, ort_model, config, imgsz, images)
            else:
                raw_model = _memory_model(raw_proto, "the raw graph")
                report.cases = _parity(reference, raw_model, config, imgsz, images)
                if images is not None:
                    report.cases.append(_nms_case(raw_model, ort_model, config.nms, images))
            _raise_if_beyond(report, config)
    if config.nms is not None:
        from optkit.stages.onnx_nms import output_note

        report.outputs_note = output_note(config.nms)
    return report


def _with_nms(proto: onnx.ModelProto, config: ExportConfig, metadata: dict) -> tuple:
    """(the graph with NMS appended, metadata with its settings and what the output now holds)."""
    from optkit.stages.onnx_nms import NMS_KEY, append_nms, output_note

    try:
        proto = append_nms(proto, config.nms)
    except ValueError as e:
        raise ExportError(f"cannot put NMS in this graph: {e}") from None
    return proto, {**metadata, NMS_KEY: config.nms.metadata(), "outputs": output_note(config.nms)}


def _memory_model(graph: onnx.ModelProto, what: str):
    """An optkit.onnxrt.OrtModel of `graph` held in memory (CPU provider)."""
    import onnxruntime as ort

    from optkit.onnxrt import OrtModel

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(
            graph.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's pybind errors share no base class
        raise ExportError(f"ONNX Runtime cannot load {what}: {_first_line(e)}") from None
    return OrtModel(f"<{what} in memory>", session=session)


def float_graph(model: nn.Module, config: ExportConfig) -> tuple[onnx.ModelProto, int, str | None, int]:
    """Trace `model` (a copy; fp16 with `config.half`) and simplify it: (graph, nodes traced, why onnxslim
    failed or None, imgsz)."""
    import torch

    from optkit.models.imgsz import check_imgsz, model_stride

    imgsz = check_imgsz(config.imgsz, model_stride(model))
    device = half_device() if config.half else torch.device("cpu")
    subject = copy.deepcopy(model).float().eval().cpu()
    _check_weight_bytes(subject, config.half)
    subject = subject.to(device)
    example = torch.randn(config.batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(config.seed))
    if config.half:
        subject, example = subject.half(), example.half()
    proto = _trace(subject, example.to(device), config)
    nodes_before = len(proto.graph.node)
    simplify_error = None
    if config.simplify:
        proto, simplify_error = _simplify(proto)
    return proto, nodes_before, simplify_error, imgsz


def export_checkpoint(
    ckpt: Checkpoint,
    output: str | os.PathLike,
    config: ExportConfig = ExportConfig(),
    source: str | os.PathLike | None = None,
    images: Iterable[torch.Tensor] | None = None,
) -> ExportReport:
    """Export a checkpoint's inference model (EMA weights when present, fp32) with optkit's metadata.

    source: the checkpoint file, hashed into `source_sha256` (omitted when None). The graph's outputs are
    named by the checkpoint's task unless `config.output_names` names them.
    """
    from optkit.checkpoint import build_model
    from optkit.quant.quantizers import quantize_entry

    config = replace(config, imgsz=config.imgsz or ckpt.imgsz, task=config.task or ckpt.task)
    if config.output_names is None:
        from optkit.tasks import get_task

        config.output_names = tuple(get_task(ckpt.task).output_names)
    config.validate()
    entry = quantize_entry(ckpt.transforms)
    if entry is None and config.int8_target:
        raise FieldError("int8_target", "needs a quantized checkpoint (made by optkit ptq-calibrate or qat)")
    if entry is not None and config.half:
        raise FieldError("half", "and INT8 do not combine: a quantized checkpoint exports as an INT8 graph")
    if config.half:
        half_device()  # before the model is built: a clear error first
    model = build_model(ckpt)
    metadata = optkit_metadata(ckpt, int(config.imgsz), int(getattr(model, "stride", 32)), source)
    if entry is None:
        return export_onnx(model, output, config, metadata, images)
    return _export_int8(model, entry, output, config, metadata, images)


def _export_int8(model, entry: dict, output, config: ExportConfig, metadata: dict, images) -> ExportReport:
    """A quantized model as a QDQ graph for `config.int8_target`, checked against its fake-quant self."""
    from optkit.quant.coverage import int8_coverage
    from optkit.quant.onnx_export import ATOL_INT8, check_target, default_target, int8_plan
    from optkit.stages.task_output import FLOAT_TAIL_TASKS

    target = check_target(config.int8_target) or default_target()
    config = replace(config, int8_target=target, atol=config.atol or ATOL_INT8[target])
    float_tail = config.task in FLOAT_TAIL_TASKS
    plan = int8_plan(model, entry, target, config.silu_form, float_tail, imgsz=int(config.imgsz))
    if config.check:  # the SiLU form is chosen among graphs that pass the check the file will get
        images = _replayable(images)
        plan.parity = silu_parity_check(model, config, images)
    metadata = {**metadata, "quantization": {"target": target, **entry.get("config", {})}}
    report = export_onnx(
        plan.float_model, output, config, metadata, images, rewrite=plan.rewrite, reference=model
    )
    report.int8 = {"target": target, **plan.report, "coverage": int8_coverage(output).as_dict()}
    return report


def silu_parity_check(reference: nn.Module, config: ExportConfig, images: Iterable | None):
    """optkit.quant.silu_form's ParityCheck: a candidate graph (in memory) against `reference` on the
    inputs and with the tolerance of the export's own check."""
    from functools import partial

    from optkit.quant.silu_form import ParityCheck

    reference = copy.deepcopy(reference).float().eval().cpu()
    measure = partial(_graph_parity, reference=reference, config=config, images=images)
    return ParityCheck(measure, config.tolerance())


def _graph_parity(graph: onnx.ModelProto, reference: nn.Module, config: ExportConfig, images) -> list:
    ort_model = _memory_model(graph, "the INT8 graph")
    return _parity(reference, ort_model, config, int(config.imgsz), images)


def _replayable(images: Iterable | None) -> Iterable | None:
    """`images` if it can be iterated again (a list, `ImageBatches`), else its batches in a
    list: the INT8 export reads them once per SiLU form and once for the written file."""
    if images is None or iter(images) is not images:
        return images
    return list(images)


def optkit_metadata(ckpt: Checkpoint, imgsz: int, stride: int, source: str | os.PathLike | None) -> dict:
    """The metadata_props optkit writes (see `optkit.onnxrt`); values still Python objects."""
    from optkit import __version__

    meta = {
        "names": list(ckpt.names),
        "imgsz": imgsz,
        "stride": stride,
        "task": ckpt.task,
        "arch": ckpt.arch["name"],
        "optkit_version": __version__,
        "preprocess": preprocess_of(ckpt),
    }
    if source is not None:
        meta["source_sha256"] = sha256_file(source)
    return meta


def preprocess_of(ckpt: Checkpoint | None) -> dict:
    """The checkpoint's input normalisation, or (also for None) the ImageNet mean/std optkit applies."""
    from optkit.data import IMAGENET_MEAN, IMAGENET_STD

    pre = (ckpt.preprocess if ckpt is not None else None) or {}
    return {
        "mean": [float(v) for v in pre.get("mean", IMAGENET_MEAN)],
        "std": [float(v) for v in pre.get("std", IMAGENET_STD)],
    }


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # 1 MiB at a time
            h.update(block)
    return h.hexdigest()


@dataclass
class ImageBatches:
    """Batches of dataset[i][0] (the image of an (image, target) item) for i in `indices`, read anew on
    every iteration (no images held in memory): the real images of a parity check."""

    dataset: Any
    indices: list[int]
    batch: int

    def __iter__(self) -> Iterator[torch.Tensor]:
        from optkit.data.subset import image_batches

        return image_batches(self.dataset, self.indices, self.batch)


# --- exporting ------------------------------------------------------------------------------------


def half_device() -> torch.device:
    """fp16 export traces on CUDA (the precision the graph will run at); there is no CPU fallback."""
    import torch

    if not torch.cuda.is_available():
        raise NoCudaError("exports an fp16 graph on CUDA, but CUDA is not available on this machine")
    return torch.device("cuda:0")


def _check_weight_bytes(model: nn.Module, half: bool) -> None:
    tensors = list(model.parameters()) + list(model.buffers())
    size = sum(t.numel() * (2 if half and t.is_floating_point() else t.element_size()) for t in tensors)
    if size > MAX_BYTES:
        raise ExportError(_too_big(size))


def _too_big(size: int) -> str:
    return (
        f"the model needs {size / 1e9:.2f} GB in ONNX; one self-contained .onnx file holds at most 2 GB "
        "(protobuf's limit), and optkit does not write external-data side files"
    )


def _trace(model: nn.Module, example: torch.Tensor, config: ExportConfig) -> onnx.ModelProto:
    """torch.onnx (TorchScript exporter) into memory; returns the parsed ModelProto."""
    import onnx
    import torch

    with torch.no_grad():
        output = model(example)
    if isinstance(model, torch.jit.ScriptModule) and len(flat_tensors(output)) != _top_level(output):
        raise ExportError(
            "the TorchScript module returns nested outputs (a list or dict inside its output), which its "
            "ONNX export cannot flatten; export the source model, or script it with flat outputs"
        )
    names = output_names(output, config.output_names)
    kwargs = dict(
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=config.opset,
        do_constant_folding=True,
        dynamic_axes={INPUT_NAME: INPUT_AXES, **_output_axes(names, output)} if config.dynamic else None,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.9 defaults to the torch.export-based exporter
    buffer = io.BytesIO()
    try:
        # torch warns that this exporter is deprecated, on every call: noise to a user, so muted here only
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, **kwargs)
    except Exception as e:  # torch.onnx raises RuntimeError, OnnxExporterError, SymbolicValueError, ...
        raise ExportError(f"torch.onnx could not export the model: {_first_line(e)}") from None
    return onnx.load_from_string(buffer.getvalue())


def _output_axes(names: list[str], output: Any) -> dict:
    """The free axes of each output of a graph with a free input: the batch, and every axis after the
    channels (a detector's anchors follow the input size); axis 1 (classes, or 4 + classes) is fixed."""
    tensors = flat_tensors(output)
    return {
        name: {0: "batch", **{axis: f"{name}_dim{axis}" for axis in range(2, t.ndim)}}
        for name, t in zip(names, tensors, strict=True)
    }


def _simplify(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """(onnxslim's graph, None), or (the input graph, why onnxslim failed)."""
    try:
        import onnxslim

        slim = onnxslim.slim(copy.deepcopy(proto))
        if slim is None or not len(slim.graph.node):
            return proto, "onnxslim returned no graph"
        names = ([i.name for i in slim.graph.input], [o.name for o in slim.graph.output])
        if names != ([INPUT_NAME], [o.name for o in proto.graph.output]):
            return proto, f"onnxslim changed the graph's inputs/outputs to {names}"
        return slim, None
    except Exception as e:  # any failure of an optional optimizer: keep the valid unsimplified graph
        return proto, f"{type(e).__name__}: {_first_line(e)}"


def _staged_file(target: Path):
    """A temp path beside `target`, renamed onto it on clean exit and removed on error (with any
    folders made for it); the writer creates it with open(..., "xb"). See optkit.io.atomic_path."""
    from optkit.io import atomic_path

    return atomic_path(target)


# --- parity ---------------------------------------------------------------------------------------


def _parity(
    reference: nn.Module, ort_model, config: ExportConfig, imgsz: int, images: Iterable | None
) -> list[ParityCase]:
    """`reference` vs ONNX Runtime (an optkit.onnxrt.OrtModel) on seeded random inputs (and `images`)."""
    import torch

    from optkit.models.imgsz import MAX_IMGSZ

    shapes = [(config.batch, 3, imgsz, imgsz)]
    if config.dynamic:
        other_batch = 4 if config.batch != 4 else 1
        other_size = imgsz + 32 if imgsz + 32 <= MAX_IMGSZ else imgsz - 32
        shapes += [(other_batch, 3, imgsz, imgsz), (config.batch, 3, other_size, other_size)]
    g = torch.Generator().manual_seed(config.seed)
    parts = DECODED_PARTS.get(config.task)
    cases = []
    for shape in shapes:
        x = torch.randn(shape, generator=g)
        cases.append(_compare("random", reference, ort_model, [x], parts))
    if images is not None:
        cases.append(_compare("val", reference, ort_model, images, parts))
    return cases


def _session(path: Path, half: bool):
    """CPU provider; an fp16 graph runs on CUDA when this onnxruntime has the CUDA provider."""
    import onnxruntime as ort

    from optkit.onnxrt import create_session

    providers = None
    if half and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return create_session(path, threads=None, providers=providers)


def _compare(
    kind: str, reference: nn.Module, ort_model, batches: Iterable, parts: dict | None = None
) -> ParityCase:
    """PyTorch vs ONNX Runtime on every output (a model may return a tuple/list of tensors). `parts`
    (DECODED_PARTS of the task): of a single [B, C, N] output, channel ranges measured apart, each
    relative to its own scale; max_rel is then the worst of them."""
    import torch

    refs: list[list] = []  # per batch, the flat list of output tensors
    outs: list[list] = []
    shape = None
    with torch.no_grad():
        for x in batches:
            x = x.float()
            refs.append([t.double() for t in flat_tensors(reference(x))])
            outs.append([t.double() for t in _run_graph(ort_model, x)])
            shape = [sum(r[0].shape[0] for r in refs), *x.shape[1:]]
    if not refs:
        raise ExportError("the parity check got no images")
    if len(outs[0]) != len(refs[0]):
        raise ExportError(f"ONNX Runtime returns {len(outs[0])} outputs, PyTorch {len(refs[0])}")
    ref = [torch.cat([r[i] for r in refs]) for i in range(len(refs[0]))]
    out = [torch.cat([o[i] for o in outs]) for i in range(len(refs[0]))]
    for i, (a, b) in enumerate(zip(ref, out, strict=True)):
        if a.shape != b.shape:
            raise ExportError(
                f"ONNX Runtime's output {i} has shape {list(b.shape)}, PyTorch's {list(a.shape)}"
            )
    # torch's max: a NaN anywhere comes out as NaN
    max_abs = (
        torch.stack([(b - a).abs().max() for a, b in zip(ref, out, strict=True) if a.numel()]).max().item()
    )
    scale = torch.stack([a.abs().max() for a in ref if a.numel()]).max().item()
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    agree = None
    if len(ref) == 1 and ref[0].ndim == 2:  # class scores: compare the predicted classes
        agree = (out[0].argmax(1) == ref[0].argmax(1)).double().mean().item()
    measured = None
    if parts and len(ref) == 1 and ref[0].ndim == 3:
        measured = {name: _part_delta(ref[0][:, a:b], out[0][:, a:b]) for name, (a, b) in parts.items()}
        rels = [p["max_rel"] for p in measured.values()]
        max_rel = float("nan") if any(math.isnan(r) for r in rels) else max(rels)
    return ParityCase(kind, shape, max_abs, max_rel, agree, parts=measured)


def _part_delta(ref, out) -> dict:
    """{"max_abs", "scale", "max_rel"} of one part of an output (max |Δ| over max |PyTorch|)."""
    if not ref.numel():
        return {"max_abs": 0.0, "scale": 0.0, "max_rel": 0.0}
    max_abs = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return {"max_abs": max_abs, "scale": scale, "max_rel": max_rel}


def _nms_case(raw_model, file_model, nms, batches: Iterable) -> ParityCase:
    """The file's detections ([B, max_det, 6], optkit.stages.onnx_nms) vs optkit's NMS
    (optkit.measure.nms, predict's rule: best class per box) of the raw graph's output, image by image:
    each of optkit's detections must have one of the graph's, same class, IoU >= NMS_MIN_IOU, and the
    same counts. `max_abs`: the worst |score Δ| of matched pairs."""
    import torch

    from optkit.measure.nms import non_max_suppression

    counts = {"images": 0, "detections": 0, "graph_detections": 0, "matched": 0}
    min_iou, score_delta, shape = 1.0, 0.0, None
    with torch.no_grad():
        for x in batches:
            x = x.float()
            raw = _run_graph(raw_model, x)[0]
            final = _run_graph(file_model, x)[0]
            ours = non_max_suppression(raw, conf=nms.conf, iou=nms.iou, max_det=nms.max_det)
            for mine, theirs in zip(ours, final, strict=True):
                theirs = theirs[theirs[:, 4] > 0]  # score 0: padding
                matched, worst_iou, worst_score = _match(mine, theirs)
                counts["detections"] += len(mine)
                counts["graph_detections"] += len(theirs)
                counts["matched"] += matched
                min_iou, score_delta = min(min_iou, worst_iou), max(score_delta, worst_score)
            counts["images"] += len(x)
            shape = [counts["images"], *x.shape[1:]]
    if shape is None:
        raise ExportError("the NMS check got no images")
    found = {**counts, "min_iou": min_iou, "score_max_abs": score_delta}
    return ParityCase("nms", shape, score_delta, score_delta, None, nms=found)


def _match(mine, theirs) -> tuple[int, float, float]:
    """(how many of `mine` have a detection of `theirs` of the same class with IoU >= NMS_MIN_IOU, each
    used once; the least IoU of those pairs; the largest |score Δ| of those pairs)."""
    from optkit.measure.nms import box_iou

    if not len(mine) or not len(theirs):
        return 0, 1.0, 0.0
    iou = box_iou(mine[:, :4], theirs[:, :4])
    iou[mine[:, 5][:, None] != theirs[:, 5][None, :]] = 0.0
    used, matched, least, worst = set(), 0, 1.0, 0.0
    for i in range(len(mine)):
        order = iou[i].argsort(descending=True).tolist()
        j = next((j for j in order if j not in used and iou[i, j] >= NMS_MIN_IOU), None)
        if j is None:
            continue
        used.add(j)
        matched += 1
        least = min(least, iou[i, j].item())
        worst = max(worst, abs(mine[i, 4] - theirs[j, 4]).item())
    return matched, least, worst


def _run_graph(ort_model, x: torch.Tensor) -> list:
    """Every output of the graph for `x`; a graph that fails to run there is an ExportError in one line
    (e.g. a model that fixed a size while traced, run at another size)."""
    try:
        return ort_model.run_all(x)
    except Exception as e:  # onnxruntime's pybind errors (Fail, RuntimeException, ...) share no base class
        dims = "x".join(str(d) for d in x.shape)
        raise ExportError(
            f"ONNX Runtime cannot run the exported graph on input {dims}: {_first_line(e)}"
        ) from None


def flat_tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model's output in the order torch.onnx flattens them into graph outputs: depth
    first through tuples, lists and dicts (a dict's values in insertion order, as torch.jit._flatten
    reads them); anything else (None, numbers, strings) is no output. Both sides of a parity check are
    read this way, so a model returning Ultralytics 8.4's (y, {"boxes", "scores", "feats": [3 maps]})
    is compared output by output."""
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flat_tensors(item)]
    return []


def _top_level(output: Any) -> int:
    return len(output) if isinstance(output, (list, tuple)) else 1


def output_names(output: Any, wanted: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """ONNX output names: `wanted` (the task's names) when it names every output tensor, else output0,
    output1, ... (as YOLOv5 / Ultralytics name theirs)."""
    n = len(flat_tensors(output))
    if n == 0:
        raise ExportError("the model's output holds no tensors")
    if wanted and len(wanted) == n:
        return list(wanted)
    return [f"output{i}" for i in range(n)]


def _raise_if_beyond(report: ExportReport, config: ExportConfig) -> None:
    _raise_if_nms_differs(report)
    worst = report.worst()
    atol = config.tolerance()
    if worst is None or worst.max_rel <= atol:
        return
    summary = (
        f"ONNX Runtime's output differs from PyTorch's on {worst.label()}: max |Δ| {worst.max_abs:.3g} is "
        f"{worst.max_rel:.3g} of the output scale, above atol={atol:g}; nothing written"
    )
    raise ParityError(summary, worst.max_rel, report.simplified, config.int8_target)


def _raise_if_nms_differs(report: ExportReport) -> None:
    case = next((c for c in report.cases if c.input == "nms"), None)
    if case is None:
        return
    n = case.nms
    same = n["matched"] == n["detections"] == n["graph_detections"]
    if same and n["score_max_abs"] <= NMS_SCORE_ATOL:
        return
    raise ExportError(
        f"the graph's NMS differs from optkit's on {n['images']} val images: {n['graph_detections']} "
        f"detections vs optkit's {n['detections']}, {n['matched']} matched (same class, IoU >= "
        f"{NMS_MIN_IOU}), max |score Δ| {n['score_max_abs']:.3g}; nothing written"
    )


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
