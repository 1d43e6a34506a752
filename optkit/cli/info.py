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
    from optkit.report.console import emit_json
    from optkit.report.info import print_info
    from optkit.workflows.info import InfoRequest, run_info

    request = InfoRequest(weights=weights, trust=trust, code_dir=code_dir, model_name=model_name)
    result = run_info(request)
    emit_json(result) if json_out else print_info(result)
