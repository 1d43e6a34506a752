"""`optkit export`: a checkpoint as one self-contained ONNX file, checked with ONNX Runtime."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o

OnnxOutput = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Output .onnx file (default: <stem>.onnx beside the input); --format openvino: a folder "
        "(default: <stem>_openvino/).",
    ),
]


def export(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx, or openvino: an IR folder (.xml + .bin) converted from the checked ONNX graph and "
            "checked against it (needs the openvino extra; INT8 as standard Q/DQ, run in int8 by OpenVINO).",
        ),
    ] = "onnx",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset, 11-20.")] = 17,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="Free batch size and input height/width.")
    ] = False,
    simplify: Annotated[
        bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxslim.")
    ] = True,
    half: Annotated[bool, typer.Option("--half", help="fp16 graph (needs CUDA).")] = False,
    imgsz: o.Imgsz = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Batch size of the graph (--dynamic: of the example).")
    ] = 1,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Also compare on up to 256 val images of this dataset."),
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the ONNX Runtime comparison.")] = False,
    int8_target: Annotated[
        str | None,
        typer.Option(
            "--int8-target",
            help="Quantized checkpoints: onnxruntime (uint8 activations, fast on CPU), tensorrt "
            "(symmetric int8) or openvino (symmetric int8 laid out for OpenVINO's CPU plugin). Default: "
            "tensorrt with CUDA, else onnxruntime; --format openvino picks by measurement.",
        ),
    ] = None,
    silu_form: Annotated[
        str,
        typer.Option(
            "--silu-form",
            help="onnxruntime INT8: SiLU as quickgelu (float op between Q/DQ) or qlinear (QLinearSigmoid + "
            "QLinearMul); auto keeps a form that passes the parity check, qlinear only when both pass and it "
            "runs more than 10% faster here.",
        ),
    ] = "auto",
    atol: Annotated[
        float | None,
        typer.Option("--atol", help="Max |Δ| / max |output| allowed (default 1e-4; 1e-2 with --half)."),
    ] = None,
    nms: Annotated[
        bool,
        typer.Option(
            "--nms",
            help="Detectors: NMS in the graph; the file returns [B, max-det, 6] rows (x1, y1, x2, y2, score, "
            "class), rows with score 0 are padding.",
        ),
    ] = False,
    conf: Annotated[
        float | None, typer.Option("--conf", help="With --nms: keep scores above this (default 0.25).")
    ] = None,
    iou: Annotated[
        float | None, typer.Option("--iou", help="With --nms: IoU above which a box is suppressed (0.7).")
    ] = None,
    max_det: Annotated[
        int | None, typer.Option("--max-det", help="With --nms: detections per image (300).")
    ] = None,
    output: OnnxOutput = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Export to ONNX: writes <stem>.onnx (or -o) with class names and input size in its metadata, after
    comparing ONNX Runtime's output with PyTorch's (max |Δ|; a classifier's top-1 agreement, a detector's
    boxes and scores each against its own scale, and with --nms its detections against optkit's NMS)."""
    from optkit.report.console import emit_json
    from optkit.report.export import print_export
    from optkit.workflows.export import ExportRequest, run_export

    request = ExportRequest(
        weights=weights,
        opset=opset,
        dynamic=dynamic,
        simplify=simplify,
        half=half,
        imgsz=imgsz,
        batch=batch_size,
        data=data,
        check=not no_check,
        int8_target=int8_target,
        silu_form=silu_form,
        atol=atol,
        output=output,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
        nms=nms,
        conf=conf,
        iou=iou,
        max_det=max_det,
        format=format_,
    )
    result = run_export(request)
    emit_json(result) if json_out else print_export(result)
