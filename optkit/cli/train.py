"""`optkit train`: fine-tune a checkpoint or train a zoo model (the embedded trainer)."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def train(
    model: Annotated[
        str | None, typer.Option("--model", help="Zoo model to train from scratch (see optkit models).")
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Checkpoint to fine-tune (its EMA weights if any).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue an interrupted run from its last.pt.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Classifiers: builtin:shapes (the default) or a folder with train/ and val/ class "
            "folders. Detectors: builtin:shapes-det or a YOLO data.yaml. With --resume: where the run's "
            "dataset is now (default: the path last.pt was trained on).",
        ),
    ] = None,  # None: builtin:shapes, or on --resume the saved path (TrainConfig.data)
    epochs: o.Epochs = 10,
    imgsz: o.Imgsz = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", "-b", help="Images per step, all torchrun processes together; -1 = autobatch."
        ),
    ] = 64,
    act: Annotated[
        str | None, typer.Option("--act", help="Activation for --model: silu, relu, relu6, hardswish.")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option("--dropout", help="Classifier dropout for --model.")
    ] = None,
    model_opt: Annotated[
        list[str] | None, typer.Option("--model-opt", help="Other model option KEY=VALUE (repeatable).")
    ] = None,
    optimizer: o.Optimizer = "AdamW",
    lr0: Annotated[
        float | None,
        typer.Option(
            "--lr0", help="Initial learning rate (default: 0.001 for classifiers, 0.002 for detectors)."
        ),
    ] = None,
    lrf: o.Lrf = 0.01,
    momentum: o.Momentum = 0.9,
    weight_decay: o.WeightDecay = 5e-4,
    cos_lr: Annotated[bool, typer.Option("--cos-lr", help="Cosine instead of linear lr decay.")] = False,
    warmup_epochs: o.WarmupEpochs = 1.0,
    label_smoothing: o.LabelSmoothing = 0.0,
    close_mosaic: Annotated[
        int, typer.Option("--close-mosaic", help="Detectors: train the last N epochs without mosaic.")
    ] = 10,
    box: Annotated[float, typer.Option("--box", help="Detectors: box (CIoU) loss gain.")] = 7.5,
    cls: Annotated[float, typer.Option("--cls", help="Detectors: class (BCE) loss gain.")] = 0.5,
    dfl: Annotated[float, typer.Option("--dfl", help="Detectors: distribution focal loss gain.")] = 1.5,
    skip_bad_labels: o.SkipBadLabels = False,
    patience: o.Patience = 50,
    freeze: o.Freeze = 0,
    seed: o.Seed = 0,
    device: o.Device = "",
    threads: o.Threads = None,
    workers: o.Workers = None,
    fraction: o.Fraction = 1.0,
    cache: o.Cache = False,
    amp: o.Amp = True,
    sync_bn: Annotated[
        bool, typer.Option("--sync-bn", help="Under torchrun: BatchNorm statistics over all GPUs (CUDA).")
    ] = False,
    project: o.Project = "runs/train",
    name: o.Name = "exp",
    exist_ok: o.ExistOk = False,
    stop_after: Annotated[
        int | None,
        typer.Option("--stop-after", help="Stop this run after N epochs; finish later with --resume."),
    ] = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Train: writes runs/train/exp*/weights/{best,last}.pt, results.csv and args.yaml.

    Under `torchrun --nproc_per_node N -m optkit train ...` each process trains on 1/N of every batch;
    rank 0 alone writes and prints.
    """
    from optkit.report.console import emit_json
    from optkit.report.train import TrainDisplay, print_summary
    from optkit.threads import set_cpu_threads
    from optkit.train.config import TrainConfig
    from optkit.workflows.train import model_options, run_train

    cfg = TrainConfig(
        model=model,
        model_options=model_options(act, dropout, model_opt or []),
        weights=weights,
        data=data,
        epochs=epochs,
        imgsz=imgsz,
        batch_size=batch_size,
        optimizer=optimizer,
        lr0=lr0,
        lrf=lrf,
        momentum=momentum,
        weight_decay=weight_decay,
        cos_lr=cos_lr,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        close_mosaic=close_mosaic,
        box=box,
        cls=cls,
        dfl=dfl,
        skip_bad_labels=skip_bad_labels,
        patience=patience,
        freeze=freeze,
        seed=seed,
        device=device,
        workers=workers,
        fraction=fraction,
        cache=cache,
        amp=amp,
        sync_bn=sync_bn,
        project=project,
        name=name,
        exist_ok=exist_ok,
        stop_after=stop_after,
        resume_from=resume,
    )
    used_threads = set_cpu_threads(threads)
    with TrainDisplay() as display:
        result = run_train(cfg, progress=display)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    if json_out:
        emit_json({**result.as_dict(), "threads": used_threads})
    else:
        print_summary(result)
