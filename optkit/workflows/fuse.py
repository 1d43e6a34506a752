"""The `optkit fuse` flow: open a model file, fold BatchNorm into the layers before it, check the
outputs on random inputs, write the result in the input's layout."""

from __future__ import annotations

from dataclasses import dataclass

from optkit.limits import ATOL


@dataclass
class FuseRequest:
    weights: str  # the model file to fuse
    atol: float = 1e-4  # max |Δ| allowed, relative to the output scale (max |output|)
    check: bool = True  # compare outputs before/after on random inputs
    output: str | None = None  # None: <stem>-fused.pt beside the input
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into

    def __post_init__(self) -> None:
        ATOL.check("--atol", self.atol)  # > 0 and finite


def run_fuse(req: FuseRequest, progress=None) -> dict:
    """Write the fused file; returns source, output, the stage's report (fused pairs, BN left and why,
    max |Δ| abs and relative) and the parameter counts before and after. `progress`: an
    optkit.report.progress display (default: quiet)."""
    from optkit.models import count_params
    from optkit.report.progress import Quiet
    from optkit.stages.fuse import FuseConfig, fuse, fuse_transform
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import stage_output

    progress = progress or Quiet()
    target = stage_output(req.weights, "fused", req.output)  # checked writable before any work
    src = open_model(
        req.weights, command="fuse", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    model = src.model()
    # line=False: a bar on a terminal only; a failed output check is an error line of its own
    with progress.step("folding BatchNorm into conv/linear layers", line=False):
        fused, report = fuse(model, FuseConfig(check=req.check, atol=req.atol, imgsz=src.imgsz))
    if src.foreign is not None:  # a YOLO module keeps its own fused layout (Conv.forward_fuse)
        from optkit.foreign.fuse import yolo_fused_layout_

        yolo_fused_layout_(fused, report.fused)
    args = {"atol": req.atol, "check": req.check}
    transform = fuse_transform(report.fused)  # None when nothing was folded
    src.save_stage_output(fused, target, "fuse", args, report.as_dict(), transform)
    return {
        "source": req.weights,
        "output": str(target),
        **report.as_dict(),
        "params_before": count_params(model),
        "params_after": count_params(fused),
    }
