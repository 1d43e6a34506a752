"""The `optkit strip` flow: open a checkpoint, write it without training state (optionally fp16), and
say what was dropped and how the size changed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StripRequest:
    weights: str  # the checkpoint to strip (e.g. last.pt)
    half: bool = False  # store floating-point weights as fp16
    output: str | None = None  # None: <stem>-stripped.pt beside the input
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into


def run_strip(req: StripRequest, progress=None) -> dict:
    """Write the stripped file; returns source, output, half, dropped (what was removed) and the file
    sizes before and after in bytes. `progress`: an optkit.report.progress display (default: quiet)."""
    from optkit.report.progress import Quiet
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import file_size, stage_output

    progress = progress or Quiet()
    target = stage_output(req.weights, "stripped", req.output)  # checked writable before any work
    src = open_model(
        req.weights, command="strip", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    with progress.step(f"writing {target}"):
        _, dropped = src.save_stripped(target, req.half)
    return {
        "source": req.weights,
        "output": str(target),
        "half": req.half,
        "dropped": dropped,
        "bytes_before": file_size(req.weights),
        "bytes_after": file_size(target),
    }
