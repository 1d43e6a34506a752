"""`optkit predict`: a detector's boxes on images (listed, and drawn with --save)."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def predict(
    weights: Annotated[
        str,
        typer.Argument(
            help="A detector: an optkit .pt, a trusted foreign .pt, or an .onnx from optkit export."
        ),
    ],
    source: Annotated[
        str, typer.Option("--source", help="An image, a folder of images, or a .txt list of image paths.")
    ],
    imgsz: o.Imgsz = None,
    conf: Annotated[float, typer.Option("--conf", help="Score threshold of the boxes kept.")] = 0.25,
    iou: Annotated[float, typer.Option("--iou", help="NMS IoU threshold.")] = 0.7,
    max_det: Annotated[int, typer.Option("--max-det", help="Boxes kept per image.")] = 300,
    save: Annotated[
        bool, typer.Option("--save", help="Draw the boxes (class and score) into runs/predict/exp*.")
    ] = False,
    project: Annotated[
        str, typer.Option("--project", help="Parent folder of the drawn images' run.")
    ] = "runs/predict",
    name: o.Name = "exp",
    exist_ok: o.ExistOk = False,
    device: o.Device = "",
    threads: o.Threads = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Predict: run a detector over images; prints a line per image (or --json: every box)."""
    from optkit.report.console import emit_json
    from optkit.report.predict import print_predict
    from optkit.report.progress import StepDisplay
    from optkit.threads import set_cpu_threads
    from optkit.workflows.predict import PredictRequest, run_predict

    set_cpu_threads(threads)
    request = PredictRequest(
        weights=weights, source=source, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, save=save,
        project=project, name=name, exist_ok=exist_ok, device=device, trust=trust, code_dir=code_dir,
    )  # fmt: skip
    with StepDisplay() as progress:
        result = run_predict(request, progress=progress)
    if json_out:
        emit_json(result.as_dict())
    else:
        print_predict(result)
