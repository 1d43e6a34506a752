"""`optkit val`: a model's metrics on a dataset's val split (top-1 / top-5 / loss of a classifier, P, R,
mAP50, mAP50-95 of a detector): a checkpoint, an .onnx (ONNX Runtime) or an OpenVINO IR."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def val(
    weights: Annotated[
        str,
        typer.Argument(
            help="An optkit .pt checkpoint, an .onnx from optkit export (ONNX Runtime) or an OpenVINO IR "
            "folder / .xml from optkit export --format openvino."
        ),
    ],
    data: o.ModelData = None,
    imgsz: o.Imgsz = None,
    conf: o.Conf = None,
    iou: o.Iou = None,
    max_det: o.MaxDet = None,
    skip_bad_labels: o.SkipBadLabels = False,
    batch_size: o.BatchSize = 128,
    workers: o.Workers = None,
    device: o.Device = "",
    threads: o.Threads = None,
    precision: o.Precision = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Validate on the val split: a classifier's top-1/top-5, a detector's P, R, mAP50 and mAP50-95 (COCO,
    also per class), and the loss (the checkpoint's EMA weights if it has them)."""
    from optkit.report.console import emit_json
    from optkit.report.progress import StepDisplay
    from optkit.report.val import print_val
    from optkit.threads import set_cpu_threads
    from optkit.workflows.val import ValRequest, run_val

    used_threads = set_cpu_threads(threads)
    request = ValRequest(
        weights=weights,
        data=data,
        imgsz=imgsz,
        batch_size=batch_size,
        workers=workers,
        device=device,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
        conf=conf,
        iou=iou,
        max_det=max_det,
        skip_bad_labels=skip_bad_labels,
        precision=precision,
    )
    with StepDisplay() as progress:
        result = run_val(request, progress=progress)
    if json_out:
        emit_json({**result, "threads": used_threads})
    else:
        print_val(result)
