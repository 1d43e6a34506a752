"""`optkit convert`: an Ultralytics YOLOv8 detection checkpoint -> an optkit yolo-det checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def convert(
    weights: Annotated[str, typer.Argument(help="An Ultralytics YOLOv8 detection .pt (e.g. best.pt).")],
    output: o.Output = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Convert a YOLOv8 detector (needs --trust to read it) into an optkit checkpoint: writes
    <stem>-optkit.pt (or -o), which loads safely and needs no --trust again; prints the output check."""
    from optkit.report.console import emit_json
    from optkit.report.convert import print_convert
    from optkit.workflows.convert import ConvertRequest, run_convert

    request = ConvertRequest(weights=weights, output=output, trust=trust, code_dir=code_dir)
    result = run_convert(request)
    emit_json(result) if json_out else print_convert(result)
