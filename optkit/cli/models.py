"""`optkit models`: the model registry."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def models(
    all_models: Annotated[bool, typer.Option("--all", help="Include the tiny test models.")] = False,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes for the param count.")] = 1000,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """List the registered models: name, params, default imgsz, stride."""
    from optkit.report.console import emit_json
    from optkit.report.models import print_models
    from optkit.workflows.models import ModelsRequest, run_models

    result = run_models(ModelsRequest(include_test=all_models, num_classes=num_classes))
    emit_json(result) if json_out else print_models(result)
