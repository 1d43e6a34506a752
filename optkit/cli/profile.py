"""`optkit profile`: params, FLOPs, latency, throughput, memory, per-layer time and a batch sweep of a
.pt checkpoint (PyTorch), an .onnx file (ONNX Runtime), an OpenVINO IR (folder or .xml) or a zoo model."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def profile(
    model: Annotated[
        str | None,
        typer.Argument(
            help="A .pt checkpoint, an .onnx file, an OpenVINO IR (folder or .xml) or a zoo model name. "
            "Default: the newest runs/**/weights/best.pt here, else yolo-cls-n."
        ),
    ] = None,
    imgsz: o.Imgsz = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Images per pass for counts, latency and memory.")
    ] = 1,
    batch_sizes: Annotated[
        str | None,
        typer.Option("--batch-sizes", help="Sweep, e.g. 1,8,32: latency, img/s, memory per batch."),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed passes before timing.")] = 10,
    runs: Annotated[int, typer.Option("--runs", help="Timed passes.")] = 50,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="Intra-op threads (torch / ONNX Runtime / OpenVINO); default: theirs."
        ),
    ] = None,
    precision: o.Precision = None,
    device: o.Device = "",
    backward: Annotated[
        bool, typer.Option("--backward", help="Also time forward + backward (PyTorch).")
    ] = False,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Time per layer / ONNX node.")] = False,
    top: Annotated[int, typer.Option("--top", help="Per-layer rows to show (slowest first).")] = 15,
    autobatch: Annotated[
        bool, typer.Option("--autobatch", help="CUDA: the batch that fills --fraction of free memory.")
    ] = False,
    fraction: Annotated[float, typer.Option("--fraction", help="Autobatch: fraction of free memory.")] = 0.8,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Profile a model: params, GFLOPs, latency (median/p90/min), img/s, memory; optionally per layer."""
    from optkit.report.console import emit_json
    from optkit.report.profile import print_profile
    from optkit.report.progress import StepDisplay
    from optkit.workflows.profile import ProfileRequest, parse_batch_sizes, run_profile

    request = ProfileRequest(
        source=model,
        imgsz=imgsz,
        batch_size=batch_size,
        batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes is not None else [],
        warmup=warmup,
        runs=runs,
        threads=threads,
        precision=precision,
        device=device,
        backward=backward,
        per_layer=per_layer,
        top=top,
        autobatch=autobatch,
        fraction=fraction,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
    )
    with StepDisplay() as progress:  # steps on stderr
        result = run_profile(request, progress=progress)
    emit_json(result) if json_out else print_profile(result)
