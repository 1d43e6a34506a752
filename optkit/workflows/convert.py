"""The `optkit convert` flow: a trusted Ultralytics YOLOv8 detection checkpoint -> an optkit `yolo-det-*`
checkpoint (optkit.foreign.convert_yolov8 maps it by structure). The output holds tensors and plain data
only: it loads with `torch.load(weights_only=True)` and no command needs --trust for it again.

What is carried over: the deployed weights (the EMA when the file has one), the class names, the training
image size; the strides are checked (8, 16, 32). Training state (optimizer, EMA, epoch) is not: the
converted file is a finished model that `optkit train --weights` fine-tunes with a fresh optimizer.
Before anything is written, the converted model's outputs are compared with the file's own module on
random images; a difference above OUTPUT_RTOL of the output scale stops the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optkit.errors import CheckpointError, ConfigError

SOURCE = "Ultralytics YOLOv8 detection checkpoint"


@dataclass
class ConvertRequest:
    weights: str  # the foreign file (e.g. an Ultralytics best.pt)
    output: str | None = None  # None: <stem>-optkit.pt beside the input
    trust: bool = False  # unpickle the foreign file (runs its code); convert needs it
    code_dir: str | None = None  # with trust: folder put on the import path


def run_convert(req: ConvertRequest, progress=None) -> dict:
    """Write the optkit checkpoint; returns source, output, what the file was (its Ultralytics version,
    which weights were used), the model built (arch, options, scale), names, imgsz, stride, the output
    comparison and what was left behind. `progress`: an optkit.report.progress display (default: quiet)."""
    from optkit.checkpoint import save_checkpoint
    from optkit.foreign.convert_yolov8 import OUTPUT_RTOL, check_size, compare_outputs
    from optkit.report.progress import Quiet
    from optkit.workflows.outputs import file_size, stage_output

    progress = progress or Quiet()
    target = stage_output(req.weights, "optkit", req.output)  # checked writable before any work
    src = _open_foreign(req)
    foreign = src.foreign
    with progress.step("mapping the YOLOv8 layers onto optkit's yolo-det"):
        module = foreign.module()  # float32, eval, the deployed weights (EMA when present)
        model, conversion = _mapped(src.path, module)
        if conversion.num_classes != len(src.names):
            raise CheckpointError(
                f"{src.path}: its names list {len(src.names)} classes but its head has "
                f"{conversion.num_classes} class outputs"
            )
    size = check_size(src.imgsz)
    with progress.step(f"comparing outputs on random {size} px images"):
        check = compare_outputs(module, model, conversion.num_classes, size)
    conversion.check = check
    if check["max_rel"] > OUTPUT_RTOL or check["max_abs_scores"] > OUTPUT_RTOL:
        raise CheckpointError(
            f"{src.path}: the converted model's outputs differ from the file's (max |Δ| "
            f"{check['max_abs']:.3g}, {check['max_rel']:.3g} of the output scale; scores "
            f"{check['max_abs_scores']:.3g}; allowed {OUTPUT_RTOL:g}): its module does not compute what "
            "YOLOv8's layers do; not converted"
        )
    with progress.step(f"writing {target}"):
        save_checkpoint(_checkpoint(src, model, conversion), target)
    return {
        "source": req.weights,
        "output": str(target),
        "from": _described(foreign),
        "weights": "EMA" if foreign.key == "ema" else "model",
        **conversion.as_dict(),
        "names": list(src.names),
        "imgsz": src.imgsz,
        "stride": src.stride,
        "dropped": [p for p in foreign.dropped_parts() if not p.startswith("ema (")],
        "bytes_before": file_size(req.weights),
        "bytes_after": file_size(target),
    }


def _open_foreign(req: ConvertRequest):
    """The foreign file, opened as every command opens one (refused without --trust before unpickling);
    other kinds of file are refused in words for convert (it has no --model)."""
    from optkit.checkpoint import StateDictError, _check_readable_file
    from optkit.foreign.scan import is_torchscript
    from optkit.workflows.inputs import open_model

    path = Path(req.weights)
    _check_readable_file(path)
    if is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript file; convert reads a pickled {SOURCE} (with --trust)"
        )
    try:
        src = open_model(path, command="convert", trust=req.trust, code_dir=req.code_dir)
    except StateDictError as e:
        raise e.worded(f"{e.facts}; convert reads a pickled {SOURCE} (with --trust)") from None
    if src.foreign is None:
        raise ConfigError(f"{path} is already an optkit checkpoint ({src.arch}); there is nothing to convert")
    if src.task != "detect":
        raise ConfigError(f"{path} is a {src.task} model; convert reads {SOURCE}s only")
    return src


def _mapped(path: Path, module):
    from optkit.foreign.convert_yolov8 import StructureError, convert_yolov8

    try:
        return convert_yolov8(module)
    except StructureError as e:
        raise CheckpointError(f"{path} is not a YOLOv8 detector optkit can convert: {e}") from None


def _checkpoint(src, model, conversion):
    """The optkit checkpoint: recipe, weights, names, imgsz, the detector's preprocessing and the lineage
    (the file's own optkit_lineage, when optkit stages ran on it, then this conversion)."""
    from optkit.checkpoint import checkpoint_from_model
    from optkit.tasks import get_task

    ckpt = checkpoint_from_model(model, src.names, src.imgsz, task="detect")
    ckpt.preprocess = dict(get_task("detect").preprocess)
    raw = src.foreign.raw
    previous = raw.get("optkit_lineage") if isinstance(raw, dict) else None
    ckpt.lineage = [dict(e) for e in previous if isinstance(e, dict)] if isinstance(previous, list) else []
    args = {"source": str(src.path), "from": _described(src.foreign), "scale": conversion.scale}
    ckpt.add_lineage("convert", args, conversion.check)
    return ckpt


def _described(foreign) -> str:
    """e.g. "Ultralytics 8.3.40 DetectionModel" (the version a file records under `version`)."""
    raw = foreign.raw
    version = raw.get("version") if isinstance(raw, dict) else None
    kind = type(foreign.stored_module).__name__
    return f"Ultralytics {version} {kind}" if isinstance(version, str) and version else kind
