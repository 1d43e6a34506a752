"""The `optkit export` flow: open a model file, export it to one ONNX file beside it (or -o), checked
with ONNX Runtime on random inputs and, with --data, on real val images.

An optkit checkpoint (or a state_dict read into a zoo model) exports through
`optkit.stages.export.export_checkpoint`, which also writes INT8 graphs of quantized checkpoints; a
trusted foreign module or a TorchScript file exports as the module it is, with the facts taken from the
file (class names, stride, input size, the preprocessing of its pickled transforms, else its task's). A
foreign detector is exported with its detections alone, [B, 4 + nc, N] (optkit.stages.task_output: what
Ultralytics' exporter writes, and YOLOv5's [B, N, 5 + nc] turned into it); the metadata's `outputs` says
so. The graph's output names come from the model's task (`Task.output_names`); a task this optkit does
not know gets output0, output1, ... Errors of the export stage name ExportConfig's fields; this flow words
them as flags.

--nms (detectors) puts NMS in the graph (optkit.stages.onnx_nms): the file returns [B, max_det, 6]
detections, with --conf, --iou and --max-det fixed in it and recorded in its metadata. Its check compares
the graph's detections with optkit's NMS on real images: --data's val images, else `NMS_IMAGES` scenes of
builtin:shapes-det rendered in memory (the dataset's own generator, seeded; nothing is written).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from optkit.errors import ConfigError

FORMATS = ("onnx", "openvino")
PARITY_IMAGES = 256  # real images compared at most (--data)
DEFAULT_IR_ATOL = 1e-4  # IR vs ONNX when the ONNX export ran no check (--no-check)
NMS_IMAGES = 16  # builtin:shapes-det scenes the --nms check runs on without --data
NMS_SEED = 0  # seeds those scenes
BUILTIN_SCENES = "builtin:shapes-det scenes"  # what the report calls them
# ExportConfig's fields -> the flags that set them (optkit.cli.export)
FLAGS = {
    "opset": "--opset",
    "batch": "--batch-size",
    "int8_target": "--int8-target",
    "atol": "--atol",
    "half": "--half",
    "silu_form": "--silu-form",
    "data": "--data",  # the export's real images (ExportRequest.data), named by SiLU-form advice
    "nms": "--nms",
    "conf": "--conf",
    "iou": "--iou",
    "max_det": "--max-det",
}


@dataclass
class ExportRequest:
    weights: str  # the model file to export
    opset: int = 17
    dynamic: bool = False  # free batch size and input height/width
    simplify: bool = True  # simplify the graph with onnxslim
    half: bool = False  # fp16 graph (needs CUDA)
    imgsz: int | None = None  # pixels; None: the model's own
    batch: int = 1  # batch size of the graph (dynamic: of the example)
    data: str | None = None  # also compare on up to PARITY_IMAGES val images of this dataset
    check: bool = True  # compare ONNX Runtime with PyTorch
    int8_target: str | None = None  # quantized checkpoints: onnxruntime or tensorrt
    silu_form: str = "auto"  # onnxruntime INT8: auto, quickgelu or qlinear
    atol: float | None = None  # max |Δ| / max |output|; None: the export's default
    output: str | None = None  # a .onnx path; None: <stem>.onnx beside the input
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into
    nms: bool = False  # detectors: NMS in the graph, [B, max_det, 6] out
    conf: float | None = None  # with nms: score threshold; None: predict's 0.25
    iou: float | None = None  # with nms: IoU threshold; None: 0.7
    max_det: int | None = None  # with nms: detections per image; None: 300
    format: str = "onnx"  # onnx, or openvino: an IR folder converted from the checked ONNX graph

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "openvino" and self.half:
            raise ConfigError(
                "--half writes an fp16 ONNX graph for CUDA; an OpenVINO IR keeps float32 weights"
            )
        settings = (("--conf", self.conf), ("--iou", self.iou), ("--max-det", self.max_det))
        given = [flag for flag, value in settings if value is not None]
        if given and not self.nms:
            raise ConfigError(f"{given[0]} sets the NMS that --nms puts in the graph; add --nms or drop it")
        with flags_worded():
            self.config().validate()
        if self.data is not None and not self.check:
            raise ConfigError("--data feeds the output comparison, which --no-check skips; drop one of them")

    def nms_config(self):
        """The NMS put in the graph (optkit.stages.onnx_nms.NmsConfig), or None without --nms."""
        if not self.nms:
            return None
        from optkit.stages.onnx_nms import NmsConfig

        given = {"conf": self.conf, "iou": self.iou, "max_det": self.max_det}
        return NmsConfig(**{k: v for k, v in given.items() if v is not None})

    def config(self):
        """The export stage's config (optkit.stages.export.ExportConfig); imgsz as asked (maybe None)."""
        from optkit.stages.export import ExportConfig

        return ExportConfig(
            imgsz=self.imgsz,
            batch=self.batch,
            opset=self.opset,
            dynamic=self.dynamic,
            simplify=self.simplify,
            half=self.half,
            check=self.check,
            atol=self.atol,
            int8_target=self.int8_target,
            silu_form=self.silu_form,
            nms=self.nms_config(),
        )


def run_export(req: ExportRequest, progress=None) -> dict:
    """Write the ONNX file; returns {"source", **ExportReport.as_dict()} (what optkit.report.export
    prints). `progress`: an optkit.report.progress display (default: quiet). Nothing is written when a
    check fails, and the input is never touched."""
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    if req.format == "openvino":
        return _export_openvino(req, progress)
    with flags_worded():
        report = _export(req, progress)
    return {"source": req.weights, **report.as_dict()}


def _export_openvino(req: ExportRequest, progress) -> dict:
    """The ONNX export (checked against PyTorch) into a hidden file, then its IR (checked against it)
    into the -o folder (optkit.stages.export_openvino); the ONNX file is removed either way."""
    import dataclasses
    import tempfile

    from optkit.ovrt import openvino_module
    from optkit.stages.export_openvino import onnx_to_ir

    openvino_module()  # the extra missing: say so before any work
    folder = ir_output(req.weights, req.output)
    folder.parent.mkdir(parents=True, exist_ok=True)  # -o's missing parents, as for an ONNX file
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.onnx-", dir=folder.parent) as tmp:
        onnx_req = dataclasses.replace(req, format="onnx", output=str(Path(tmp) / f"{folder.name}.onnx"))
        with flags_worded():
            report = _export(onnx_req, progress, keep_images=True, int8_default=openvino_int8_target)
        with progress.step(
            f"converting to OpenVINO IR in {folder} (checked against the ONNX graph)", line=False
        ):
            ir = onnx_to_ir(
                report.output,
                folder,
                _ir_atol(req, report),
                report.parity_images,
                report.int8 is not None,
                report.images_source,
            )
    result = {"source": req.weights, **report.as_dict(), "format": "openvino", "openvino": ir.as_dict()}
    result["output"], result["bytes"], result["size_mb"] = ir.folder, ir.bytes, ir.bytes / 1e6  # MB: 10^6
    return result


def _ir_atol(req: ExportRequest, report) -> float:
    """The IR check's tolerance (max |Δ| / output scale vs the ONNX file): --atol, else the ONNX check's.
    An INT8 IR gets the onnxruntime flavour's, and so does the ONNX file it is converted from (_export),
    as issue 16 asks (the INT8 IR reproduces the fake-quant model within it): OpenVINO's int8 kernels
    round differently from ONNX Runtime's, and the tensorrt flavour's 0.02 (ties, int32 bias rounding)
    is too tight off the calibration images (8 epochs at 64 px, random N(0, 1) inputs: resnet18's IR
    0.0218 of the output scale from its ONNX, mobilenet-v2's ONNX 0.0313 from the fake-quant model)."""
    from optkit.quant.onnx_export import ATOL_INT8

    if req.atol is not None:
        return req.atol
    if report.int8 is not None:
        return ATOL_INT8["onnxruntime"]
    return report.atol or DEFAULT_IR_ATOL


def openvino_int8_target(ckpt) -> str:
    """The Q/DQ flavour (optkit.quant.qdq) an INT8 IR is converted from, chosen by measurement
    (benchmarks/openvino_vs_nncf.py --variants, 2026-12-03: speed-up over ONNX Runtime fp32 of the IR
    run by OpenVINO, batch 1, 2 threads, 224 px; NNCF's INT8 beside it):
    - classifiers whose activations are all ReLU / ReLU6: the onnxruntime flavour (uint8 activations,
      Q/DQ also at Add, Concat and pooling outputs: OpenVINO's int8 chains run unbroken): resnet18 3.63x
      against the tensorrt flavour's 3.07x (NNCF 3.61x), mobilenet-v2 2.13x against 1.86x (NNCF 2.10x);
    - anything else the openvino flavour (the tensorrt flavour's symmetric Q/DQ at layer inputs, one pair
      per tensor and before Splits: see optkit.quant.qdq; SiLU stays Sigmoid * Mul, which OpenVINO fuses
      into one Swish). The tensorrt flavour measured yolo-cls-s 2.42x against the onnxruntime flavour's
      1.90x (SiLU as QLinearSigmoid + QLinearMul; its QuickGelu form OpenVINO cannot read at all),
      yolo-det-n at 640 px 2.05x against 1.61x, and the openvino flavour 1.04x the tensorrt one on
      yolo-det-n (1.00x on yolo-cls-s). A detector's onnxruntime flavour also writes its last 1x1 convs
      as com.microsoft int8 GEMMs (its post-processing stays float), which OpenVINO cannot read."""
    from torch import nn

    from optkit.checkpoint import build_model
    from optkit.stages.task_output import FLOAT_TAIL_TASKS

    if ckpt.task in FLOAT_TAIL_TASKS:
        return "openvino"
    relu = (nn.ReLU, nn.ReLU6)
    others = (nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.Mish, nn.Tanh)
    modules = list(build_model(ckpt).modules())
    has_relu = any(isinstance(m, relu) for m in modules)
    return "onnxruntime" if has_relu and not any(isinstance(m, others) for m in modules) else "openvino"


def _export(req: ExportRequest, progress, keep_images: bool = False, int8_default: Callable | None = None):
    from optkit.models.imgsz import check_imgsz
    from optkit.stages.export import export_checkpoint, half_device, preprocess_of
    from optkit.workflows.inputs import open_model

    if req.half:
        half_device()  # no CUDA: fail before reading anything
    target = onnx_output(req.weights, req.output)  # checked writable before any work
    src = open_model(
        req.weights, command="export", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    if req.nms:
        _check_nms_task(src)
    config = req.config()
    if int8_default and src.ckpt is not None:  # an OpenVINO IR
        from optkit.quant.onnx_export import ATOL_INT8
        from optkit.quant.quantizers import quantize_entry

        if quantize_entry(src.ckpt.transforms):
            config.int8_target = config.int8_target or int8_default(src.ckpt)
            if config.atol is None:  # the IR's tolerance (_ir_atol), for its ONNX file too
                config.atol = ATOL_INT8["onnxruntime"]
    config.imgsz = check_imgsz(req.imgsz or src.imgsz, src.stride, "--imgsz")
    config.output_names = output_names_of(src.task)
    config.task = src.task
    preprocess = preprocess_of(src.ckpt) if src.ckpt is not None else foreign_preprocess(src)
    images, source = None, None
    if req.data:
        images = parity_images(req.data, _data_task(src), src.names, config.imgsz, preprocess)
        source = "val images"
    elif req.nms and req.check:
        images, source = builtin_scenes(config.imgsz, preprocess), BUILTIN_SCENES
    # line=False: a bar on a terminal only; a failed check is an error line of its own
    with progress.step(f"exporting {src.path} to {target}", line=False):
        if src.ckpt is not None:
            report = export_checkpoint(src.ckpt, target, config, source=req.weights, images=images)
        else:
            report = _export_module(src, target, config, images)  # a trusted foreign module or TorchScript
    report.images_source = source
    if keep_images:
        report.parity_images = images  # the IR is checked on them too
    return report


def _export_module(src, target: Path, config, images):
    """A model that is not an optkit checkpoint, with the metadata optkit writes taken from the file."""
    from optkit import __version__
    from optkit.stages.export import export_onnx, sha256_file
    from optkit.stages.task_output import exported_output

    if config.int8_target:
        raise ConfigError(
            f"--int8-target needs a quantized optkit checkpoint; {src.path} is a {src.kind} file"
        )
    view = exported_output(src.model(), src.task, len(src.names), int(config.imgsz))
    metadata = {
        "names": list(src.names),
        "imgsz": int(config.imgsz),
        "stride": src.stride,
        "task": src.task,
        "arch": src.arch,
        "optkit_version": __version__,
        "preprocess": foreign_preprocess(src),
        "source_format": src.kind,
        "source_sha256": sha256_file(src.path),
        **({"outputs": view.note} if view.note else {}),
    }
    report = export_onnx(view.model, target, config, metadata, images)
    if config.nms is None:  # with --nms the output is the NMS's (export_onnx's note)
        report.outputs_note = view.note
    return report


def _check_nms_task(src) -> None:
    """--nms reads a detector's [B, 4 + nc, N]; any other model is refused before any work."""
    from optkit.stages.onnx_nms import NMS_TASKS

    if src.task not in NMS_TASKS:
        raise ConfigError(
            f"--nms puts a detector's NMS in the graph; {src.path} is a {src.task} model (no boxes to "
            "suppress): export it without --nms"
        )


def builtin_scenes(imgsz: int, preprocess: dict, count: int = NMS_IMAGES, batch: int = 8) -> list:
    """`count` scenes of builtin:shapes-det (optkit.data.shapes_det.render_scene, seeded by NMS_SEED)
    rendered at `imgsz` px in memory, as batches [n, 3, imgsz, imgsz] of (pixels / 255 - mean) / std."""
    import numpy as np
    import torch

    from optkit.data.shapes_det import render_scene

    rng = np.random.default_rng(NMS_SEED)
    pixels = [render_scene(imgsz, rng, background=False)[0] for _ in range(count)]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    return list(x.split(batch))


def foreign_preprocess(src) -> dict:
    """The input normalisation ({"mean", "std"}) of a model that is not an optkit checkpoint: its pickled
    transforms', else its task's (a detector reads pixels / 255 alone), else ImageNet's."""
    from optkit.errors import CheckpointError
    from optkit.stages.export import preprocess_of
    from optkit.tasks import get_task

    if src.preprocess:
        return src.preprocess
    try:
        own = dict(get_task(src.task).preprocess)
    except CheckpointError:  # a task this optkit does not know
        own = {}
    return own or preprocess_of(None)


def output_names_of(task_name: str) -> tuple[str, ...]:
    """The graph's output names the model's task gives; () for a task this optkit does not know (e.g. a
    TorchScript file that names none): the export then says output0, output1, ..."""
    from optkit.errors import CheckpointError
    from optkit.tasks import get_task

    try:
        return tuple(get_task(task_name).output_names)
    except CheckpointError:
        return ()


def parity_images(
    data: str,
    task,
    names: list[str],
    imgsz: int,
    preprocess: dict,
    limit: int = PARITY_IMAGES,
    batch: int = 32,
):
    """Batches (optkit.stages.export.ImageBatches) of up to `limit` val images of dataset `data`, spread
    evenly over the split, as `task` (an optkit.tasks.Task) reads them at validation with `preprocess`
    ({"mean", "std"}). The dataset and its classes (`names`) are checked now; images are read while
    iterating, again on every pass."""
    from optkit.data.subset import evenly_spaced
    from optkit.measure.validate import check_classes
    from optkit.stages.export import ImageBatches

    spec = task.resolve_data(data)
    check_classes(spec, names)
    dataset = task.image_dataset(spec, names, imgsz, "val", preprocess)
    return ImageBatches(dataset, evenly_spaced(len(dataset), limit), batch)


def _data_task(src):
    """The task that reads --data for `src` (an opened model); refused when this optkit has none."""
    from optkit.errors import CheckpointError
    from optkit.tasks import get_task

    try:
        return get_task(src.task)
    except CheckpointError:
        raise ConfigError(
            f"--data: {src.path} is a {src.task} model, and this optkit reads no {src.task} datasets to "
            "compare it on; export it without --data"
        ) from None


def ir_output(source: str | Path, output: str | None) -> Path:
    """The IR folder: `<stem>_openvino/` beside the source (as Ultralytics names it), or -o (a folder;
    missing parents are created); an existing folder must be an earlier IR (it is replaced), checked
    writable."""
    from optkit.io import check_writable
    from optkit.ovrt import is_ir
    from optkit.workflows.outputs import DEFAULT_HINT

    source = Path(source)
    folder = Path(output) if output is not None else source.with_name(f"{source.stem}_openvino")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {folder} is a file; an OpenVINO IR is written as a folder (.xml + .bin)")
    if folder.is_dir() and any(folder.iterdir()) and not is_ir(folder):
        raise ConfigError(f"{folder} holds other files; give -o a new folder or an earlier OpenVINO export")
    if output is not None:
        return check_writable(folder, "-o", folder=True)
    return check_writable(folder, folder=True, hint=DEFAULT_HINT)


def onnx_output(source: str | Path, output: str | None) -> Path:
    """`<stem>.onnx` beside the source, or -o (a .onnx file path; missing folders are created),
    checked writable."""
    from optkit.io import check_writable
    from optkit.workflows.outputs import DEFAULT_HINT

    source = Path(source)
    if output is None:
        if source.suffix.lower() == ".onnx":  # the default would replace the input itself
            from optkit.checkpoint import _check_readable_file

            _check_readable_file(source)  # an ONNX file (by content), a missing file: said as for any input
            raise ConfigError(f"{source} is a checkpoint named .onnx; give -o PATH.onnx for the export")
        return check_writable(source.with_suffix(".onnx"), hint=DEFAULT_HINT)
    path = Path(output)
    if path.is_dir():
        example = path / (source.stem + ".onnx")
        raise ConfigError(f"-o {path} is a directory; give a file path such as {example}")
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {path}: export writes an ONNX model; give a path ending in .onnx")
    return check_writable(path, "-o")


@contextmanager
def flags_worded() -> Iterator[None]:
    """The export stage's errors in the words of the command: a field it names (`field`) becomes its
    flag, and a failed parity check gains the flag that may let it pass."""
    from optkit.errors import DeviceError
    from optkit.limits import FieldError, FieldsError
    from optkit.stages.export import ExportError, NoCudaError, ParityError

    try:
        yield
    except ParityError as e:
        raise ExportError(e.summary + _parity_advice(e)) from None
    except FieldError as e:
        if e.field not in FLAGS:
            raise
        raise e.for_option(FLAGS[e.field]) from None
    except FieldsError as e:  # e.g. optkit.quant.silu_form.SiluFormError: its type stays
        raise e.for_options(FLAGS) from None
    except NoCudaError as e:
        raise DeviceError(f"{FLAGS[e.field]} {e.detail}") from None


def _parity_advice(e) -> str:
    """What to change so a failed parity check passes, in flags (e: optkit.stages.export.ParityError)."""
    if e.int8_target:  # onnxslim runs before the QDQ rewrite: --no-simplify changes nothing there
        from optkit.quant.silu_form import atol_to_admit

        if not math.isfinite(e.max_rel):
            return ""
        return f"; --atol {atol_to_admit(e.max_rel)} accepts this difference"
    if e.simplified:
        return "; the graph was simplified by onnxslim, try --no-simplify"
    return ""
