"""`optkit ptq-calibrate`: INT8 post-training quantization with NVIDIA ModelOpt."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o
from optkit.quant.config import QuantConfig


def ptq_calibrate(
    weights: Annotated[
        str, typer.Argument(help="A float checkpoint: optkit's, or a YOLOv5 / Ultralytics one with --trust.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Calibration images (train split; a detector's labels unused) and accuracy (val split).",
        ),
    ],
    num_images: Annotated[int, typer.Option("--num-images", help="Calibration images.")] = 512,
    val_images: Annotated[
        int | None,
        typer.Option(
            "--val-images",
            help="Val images for the float vs INT8 comparison (default: all; a subset spans every class).",
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="Activation ranges: max, percentile, entropy, mse or mean-max (NNCF's default)."
        ),
    ] = QuantConfig.method,
    percentile: Annotated[float, typer.Option("--percentile", help="For --method percentile.")] = 99.99,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="One weight scale per layer (default: per channel).")
    ] = False,
    bias_correction: Annotated[
        bool,
        typer.Option(
            "--bias-correction/--no-bias-correction",
            help="Add to each layer's bias the mean error INT8 adds to its output, per channel.",
        ),
    ] = QuantConfig.bias_correction,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Layer name to keep in float (repeatable).")
    ] = None,
    sensitivity: Annotated[
        bool, typer.Option("--sensitivity", help="Measure and print per-layer sensitivity.")
    ] = False,
    sensitivity_metric: Annotated[
        str,
        typer.Option(
            "--sensitivity-metric",
            help="sqnr (label-free, fast; a detector: the worse of boxes and scores) or fitness (val "
            "top-1 / mAP50-95, one val pass per layer; top1 is the same).",
        ),
    ] = "sqnr",
    auto_skip: Annotated[
        float | None,
        typer.Option(
            "--auto-skip",
            help="Keep the most sensitive layers float until the fitness metric drops <= DROP points: "
            "top-1 percentage points; mAP50-95 x 100 (0.5 = 0.005 mAP50-95).",
        ),
    ] = None,
    act: Annotated[
        str | None,
        typer.Option(
            "--act",
            help="Swap every activation first (e.g. relu: fully int8 on ONNX Runtime; recover with qat).",
        ),
    ] = None,
    batch_size: o.BatchSize = 32,
    threads: o.Threads = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output file (default: <stem>-int8.pt).")
    ] = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Insert INT8 quantizers (per-channel weights, per-tensor activations), calibrate them on --data,
    and write <stem>-int8.pt; prints float vs INT8 top-1, top-1 agreement and output SQNR (a detector:
    mAP50-95 and mAP50, the SQNR of boxes and of class scores; its post-processing stays float)."""
    from optkit.report.console import emit_json
    from optkit.report.progress import StepDisplay
    from optkit.report.quant import print_ptq
    from optkit.threads import set_cpu_threads
    from optkit.workflows.ptq import PtqRequest, quant_config, run_ptq

    set_cpu_threads(threads)
    request = PtqRequest(
        weights=weights,
        data=data,
        num_images=num_images,
        val_images=val_images,
        quant=quant_config(
            method,
            percentile,
            per_channel=not per_tensor,
            skip=list(skip or []),
            bias_correction=bias_correction,
        ),
        sensitivity=sensitivity,
        sensitivity_metric=sensitivity_metric,
        auto_skip=auto_skip,
        act=act,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
        batch_size=batch_size,
        output=output,
    )
    with StepDisplay() as progress:  # steps on stderr
        result = run_ptq(request, progress=progress)
    emit_json(result) if json_out else print_ptq(result)
