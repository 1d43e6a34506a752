"""`optkit export`: a checkpoint as one self-contained ONNX file, checked with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optkit.cli import options as o

OnnxOutput = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Output .onnx file (default: <stem>.onnx beside the input)."),
]


def export(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
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
            help="Quantized checkpoints: onnxruntime (uint8 activations, fast on CPU) or tensorrt "
            "(symmetric int8). Default: tensorrt with CUDA, else onnxruntime.",
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
    output: OnnxOutput = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Export to ONNX: writes <stem>.onnx (or -o) with class names and input size in its metadata, after
    comparing ONNX Runtime's output with PyTorch's (max |Δ|, top-1 agreement)."""
    from optkit.errors import ConfigError
    from optkit.models.imgsz import check_imgsz
    from optkit.report.console import emit_json
    from optkit.report.export import print_export
    from optkit.stages.export import (
        ExportConfig,
        export_checkpoint,
        half_device,
        parity_images,
        preprocess_of,
    )
    from optkit.workflows.inputs import open_model

    config = ExportConfig(
        imgsz=imgsz,
        batch=batch_size,
        opset=opset,
        dynamic=dynamic,
        simplify=simplify,
        half=half,
        check=not no_check,
        atol=atol,
        int8_target=int8_target,
        silu_form=silu_form,
    )
    config.validate()
    if data is not None and no_check:
        raise ConfigError("--data feeds the output comparison, which --no-check skips; drop one of them")
    if half:
        half_device()  # no CUDA: fail before reading anything
    target = onnx_output(weights, output)  # checked writable before any work
    src = open_model(weights, command="export", trust=trust, code_dir=code_dir, model_name=model_name)
    config.imgsz = check_imgsz(imgsz or src.imgsz, src.stride)
    preprocess = preprocess_of(src.ckpt) if src.ckpt is not None else src.preprocess or preprocess_of(None)
    images = parity_images(data, src.names, config.imgsz, preprocess) if data else None
    if src.ckpt is not None:
        report = export_checkpoint(src.ckpt, target, config, source=weights, images=images)
    else:  # a trusted foreign module or a TorchScript file
        from optkit.foreign.export import export_input

        report = export_input(src, target, config, source=weights, images=images)
    result = {"source": weights, **report.as_dict()}
    emit_json(result) if json_out else print_export(result)


def onnx_output(source: str | Path, output: str | None) -> Path:
    """`<stem>.onnx` beside the source, or -o (a .onnx file path; missing folders are created),
    checked writable."""
    from optkit.errors import ConfigError
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
