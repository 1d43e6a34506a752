"""`optkit fuse`: fold BatchNorm into the preceding conv/linear layers, checked on random inputs."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def fuse(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
    atol: Annotated[
        float, typer.Option("--atol", help="Max |Δ| allowed, relative to the output scale (max |output|).")
    ] = 1e-4,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the output comparison.")] = False,
    output: o.Output = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Fuse Conv+BN: writes <stem>-fused.pt (or -o); prints the measured max |Δ| vs the input model."""
    from optkit.report.console import emit_json
    from optkit.report.stages import print_fuse
    from optkit.workflows.fuse import FuseRequest, run_fuse

    request = FuseRequest(
        weights=weights,
        atol=atol,
        check=not no_check,
        output=output,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
    )
    result = run_fuse(request)
    emit_json(result) if json_out else print_fuse(result)
