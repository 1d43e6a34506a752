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
    from optkit.errors import ConfigError
    from optkit.models import count_params
    from optkit.report.console import emit_json
    from optkit.report.stages import print_fuse
    from optkit.stages.fuse import FuseConfig
    from optkit.stages.fuse import fuse as fuse_stage
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import stage_output

    if not atol > 0:
        raise ConfigError(f"--atol must be > 0, got {atol}")
    target = stage_output(weights, "fused", output)
    src = open_model(weights, command="fuse", trust=trust, code_dir=code_dir, model_name=model_name)
    model = src.model()
    fused, report = fuse_stage(model, FuseConfig(check=not no_check, atol=atol, imgsz=src.imgsz))
    if src.foreign is not None:
        from optkit.foreign.fuse import yolo_fused_layout_

        yolo_fused_layout_(fused, report.fused)
    transform = {"kind": "fuse", "fused": report.fused} if report.fused else None
    args = {"atol": atol, "check": not no_check}
    src.save_stage_output(fused, target, "fuse", args, report.as_dict(), transform)
    result = {
        "source": weights,
        "output": str(target),
        **report.as_dict(),
        "params_before": count_params(model),
        "params_after": count_params(fused),
    }
    emit_json(result) if json_out else print_fuse(result)
