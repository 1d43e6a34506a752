"""`optkit info`: what a checkpoint is, what it carries, and how it was made."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def info(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Describe a checkpoint: arch, classes, imgsz, metrics, params, precision, contents, lineage."""
    from optkit.measure.describe import describe_checkpoint
    from optkit.report.console import emit_json
    from optkit.report.info import print_info

    result = describe_checkpoint(weights)
    if json_out:
        emit_json(result)
    else:
        print_info(result)
