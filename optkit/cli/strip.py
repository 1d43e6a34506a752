"""`optkit strip`: drop optimizer/EMA/training state (EMA becomes the model), optionally fp16."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def strip(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint (e.g. last.pt).")],
    half: Annotated[bool, typer.Option("--half", help="Store weights in fp16.")] = False,
    output: o.Output = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Strip training state: writes <stem>-stripped.pt (or -o), prints the size before -> after."""
    from optkit.report.console import emit_json
    from optkit.report.stages import print_strip
    from optkit.workflows.strip import StripRequest, run_strip

    request = StripRequest(
        weights=weights, half=half, output=output, trust=trust, code_dir=code_dir, model_name=model_name
    )
    result = run_strip(request)
    emit_json(result) if json_out else print_strip(result)
