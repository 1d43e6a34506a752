"""`optkit prune`: unstructured L1 (default) or structured channel pruning, optional fine-tuning."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def prune(
    weights: Annotated[str, typer.Argument(help="An optkit .pt checkpoint.")],
    amount: Annotated[
        float,
        typer.Option(
            "--amount", help="Unstructured: target sparsity of prunable weights. Structured: channel ratio."
        ),
    ] = 0.3,
    scope: Annotated[str, typer.Option("--scope", help="Unstructured: global or layer.")] = "global",
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Module name (prefix) to keep dense (repeatable).")
    ] = None,
    structured: Annotated[
        bool, typer.Option("--structured", help="Remove channels (Torch-Pruning).")
    ] = False,
    importance: Annotated[str, typer.Option("--importance", help="Structured: l1, l2 or bn-scale.")] = "l1",
    round_to: Annotated[
        int, typer.Option("--round-to", help="Structured: channel counts multiple of N.")
    ] = 8,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Dataset for the task's metrics (top-1, mAP) before/after, and fine-tuning."
        ),
    ] = None,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", help="Fine-tune N epochs on --data after pruning.")
    ] = 0,
    batch_size: o.BatchSize = 64,
    workers: o.Workers = None,
    device: o.Device = "",
    output: o.Output = None,
    trust: o.Trust = False,
    code_dir: o.CodeDir = None,
    model_name: o.ModelName = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Prune: writes <stem>-pruned.pt (or -o); reports achieved sparsity per layer and overall."""
    from optkit.report.console import emit_json
    from optkit.report.stages import print_prune
    from optkit.report.train import TrainDisplay
    from optkit.workflows.prune import PruneRequest, run_prune

    request = PruneRequest(
        weights=weights,
        amount=amount,
        scope=scope,
        ignore=list(ignore or []),
        structured=structured,
        importance=importance,
        round_to=round_to,
        data=data,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        workers=workers,
        device=device,
        output=output,
        trust=trust,
        code_dir=code_dir,
        model_name=model_name,
    )
    with TrainDisplay() as progress:  # steps and fine-tuning epochs on stderr
        result = run_prune(request, progress=progress)
    emit_json(result) if json_out else print_prune(result)
