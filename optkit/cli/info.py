"""`optkit info`: what a checkpoint is, what it carries, and how it was made."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def info(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Describe a checkpoint: arch, classes, imgsz, metrics, params, precision, contents, lineage."""
    from optkit.measure.describe import describe_input
    from optkit.report.console import emit_json
    from optkit.report.info import print_info
    from optkit.workflows.inputs import open_model

    src = open_model(weights, command="info", trust=trust, code_dir=code_dir, model_name=model_name)
    result = describe_input(src)
    if json_out:
        emit_json(result)
    else:
        print_info(result)
