"""`optkit qat`: quantization-aware fine-tuning of a ptq-calibrate checkpoint (the embedded trainer)."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o
from optkit.quant.config import QAT_DISTILL, QAT_EPOCHS, QAT_LR0, QAT_WARMUP


def qat(
    weights: Annotated[str, typer.Argument(help="A quantized checkpoint from optkit ptq-calibrate.")],
    data: o.Data = "builtin:shapes",
    epochs: o.Epochs = QAT_EPOCHS,
    batch_size: o.BatchSize = 64,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="Distillation from the float model in the loss (a classifier: KL of its class scores; "
            "a detector: KL of its head's DFL bins and class scores).",
        ),
    ] = QAT_DISTILL,
    temperature: Annotated[float, typer.Option("--temperature", help="Distillation temperature.")] = 1.0,
    optimizer: o.Optimizer = "AdamW",
    lr0: o.Lr0 = QAT_LR0,
    lrf: o.Lrf = 0.01,
    momentum: o.Momentum = 0.9,
    weight_decay: o.WeightDecay = 5e-4,
    cos_lr: Annotated[
        bool, typer.Option("--cos-lr/--linear-lr", help="Cosine (default) or linear decay.")
    ] = True,
    warmup_epochs: o.WarmupEpochs = QAT_WARMUP,
    label_smoothing: o.LabelSmoothing = 0.0,
    patience: o.Patience = 50,
    freeze: o.Freeze = 0,
    seed: o.Seed = 0,
    device: o.Device = "",
    threads: o.Threads = None,
    workers: o.Workers = None,
    fraction: o.Fraction = 1.0,
    cache: o.Cache = False,
    amp: o.Amp = True,
    num_images: Annotated[
        int | None,
        typer.Option("--num-images", help="Images to re-measure ONNX ranges on (default: as ptq-calibrate)."),
    ] = None,
    project: o.Project = "runs/qat",
    name: o.Name = "exp",
    exist_ok: o.ExistOk = False,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """QAT: fine-tune with fake quantization in the loop (the task's loss, plus distillation from the float
    model); writes runs/qat/exp*/weights/best.pt (the best epoch by the task's fitness; quantized, exports
    to INT8 ONNX) and prints float / PTQ / QAT top-1 (a detector: mAP50-95 and mAP50)."""
    from optkit.report.console import emit_json
    from optkit.report.quant import print_qat
    from optkit.report.train import TrainDisplay
    from optkit.threads import set_cpu_threads
    from optkit.workflows.qat import QatRequest, run_qat

    set_cpu_threads(threads)

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
