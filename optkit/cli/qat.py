"""`optkit qat`: quantization-aware fine-tuning of a ptq-calibrate checkpoint (the embedded trainer)."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o
from optkit.quant.config import QAT_DISTILL, QAT_EPOCHS, QAT_LR0, QAT_WARMUP


def qat(
    weights: Annotated[str, typer.Argument(help="A quantized checkpoint from optkit ptq-calibrate.")],
    data: o.Data = "builtin:shapes",
    epochs: Annotated[int, typer.Option("--epochs", help="Total epochs.")] = QAT_EPOCHS,
    batch_size: o.BatchSize = 64,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill", help="KL divergence to the float model's outputs in the loss."
        ),
    ] = QAT_DISTILL,
    temperature: Annotated[float, typer.Option("--temperature", help="Distillation temperature.")] = 1.0,
    optimizer: Annotated[str, typer.Option("--optimizer", help="SGD, Adam, AdamW or RMSProp.")] = "AdamW",
    lr0: Annotated[float, typer.Option("--lr0", help="Initial learning rate.")] = QAT_LR0,
    lrf: Annotated[float, typer.Option("--lrf", help="Final learning rate as a fraction of lr0.")] = 0.01,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum / Adam beta1.")] = 0.9,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="Weight decay at a batch of 64.")
    ] = 5e-4,
    cos_lr: Annotated[
        bool, typer.Option("--cos-lr/--linear-lr", help="Cosine (default) or linear decay.")
    ] = True,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", help="Warm-up length.")] = QAT_WARMUP,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Label smoothing.")] = 0.0,
    patience: Annotated[
        int, typer.Option("--patience", help="Stop after N epochs without improvement.")
    ] = 50,
    freeze: Annotated[int, typer.Option("--freeze", help="Freeze the first N top-level blocks.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for order and augmentation.")] = 0,
    device: o.Device = "",
    workers: o.Workers = None,
    fraction: Annotated[float, typer.Option("--fraction", help="Train on this fraction of the split.")] = 1.0,
    cache: Annotated[bool, typer.Option("--cache", help="Keep decoded training images in RAM.")] = False,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    num_images: Annotated[
        int | None,
        typer.Option("--num-images", help="Images to re-measure ONNX ranges on (default: as ptq-calibrate)."),
    ] = None,
    project: Annotated[str, typer.Option("--project", help="Parent folder of runs.")] = "runs/qat",
    name: Annotated[str, typer.Option("--name", help="Run folder name (exp, exp2, ...).")] = "exp",
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Reuse project/name if it exists.")] = False,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """QAT: fine-tune with fake quantization in the loop; writes runs/qat/exp*/weights/best.pt (quantized,
    exports to INT8 ONNX) and prints float / PTQ / QAT top-1."""
    from optkit.quant.qat import QatRequest, run_qat
    from optkit.report.console import emit_json
    from optkit.report.quant import print_qat
    from optkit.report.train import TrainDisplay

    train = dict(
        data=data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr0=lr0, lrf=lrf,
        momentum=momentum, weight_decay=weight_decay, cos_lr=cos_lr, warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing, patience=patience, freeze=freeze, seed=seed, device=device,
        workers=workers, fraction=fraction, cache=cache, amp=amp, project=project, name=name,
        exist_ok=exist_ok,
    )  # fmt: skip
    request = QatRequest(weights, train, distill=distill, temperature=temperature, num_images=num_images)
    with TrainDisplay() as display:
        result = run_qat(request, progress=display)
    emit_json(result) if json_out else print_qat(result)
