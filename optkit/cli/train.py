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
            help="builtin:shapes (the default) or a folder with train/ and val/ class folders; with "
            "--resume: where the run's dataset is now (default: the path last.pt was trained on).",
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
    lr0: o.Lr0 = 0.001,
    lrf: o.Lrf = 0.01,
    momentum: o.Momentum = 0.9,
    weight_decay: o.WeightDecay = 5e-4,
    cos_lr: Annotated[bool, typer.Option("--cos-lr", help="Cosine instead of linear lr decay.")] = False,
    warmup_epochs: o.WarmupEpochs = 1.0,
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
    from optkit.train import distributed
    from optkit.train.config import TrainConfig
    from optkit.train.trainer import Trainer
    from optkit.workflows.outputs import check_run_folder

    options = _model_options(act, dropout, model_opt or [])
    cfg = TrainConfig(
        model=model,
        model_options=options,
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
    dist = distributed.from_env()
    if not dist.is_main:
        _run_quietly(Trainer(cfg, dist=dist), cfg, dist)
        return
    if resume is None:
        cfg.validate()  # before any data is generated or memory allocated
    check_run_folder(project, resume)  # before any work: the run folder can be written
    with TrainDisplay() as display:
        result = _run(Trainer(cfg, progress=display, dist=dist), dist)
    if json_out:
        emit_json({**result.as_dict(), "threads": used_threads})
    else:
        print_summary(result)


def _run(trainer, dist):
    """trainer.run(); under torchrun, losing the connection to a process that failed (and printed its
    own error) becomes one line on rank 0."""
    from optkit.errors import OptkitError
    from optkit.train import distributed
    from optkit.workflows.inputs import optkit_checkpoints_only

    try:
        with optkit_checkpoints_only("train"):  # --weights/--resume: a pickled file's refusal in words
            return trainer.run()
    except RuntimeError as e:
        if dist.enabled and distributed.peer_failed(e):
            raise OptkitError("another torchrun process failed; its error is above") from e
        raise


def _run_quietly(trainer, cfg, dist) -> None:
    """A torchrun rank other than 0: no progress, no summary. Option errors are the same on every rank
    and rank 0 reports them, as it reports a process that failed; anything else (a file missing on this
    node, a bug) names the rank."""
    from optkit.errors import ConfigError, Interrupted, OptkitError

    try:
        if cfg.resume_from is None:
            cfg.validate()
        _run(trainer, dist)
    except ConfigError:
        raise typer.Exit(1) from None
    except Interrupted as e:  # rank 0 says what last.pt holds; this rank knows nothing of the saves
        raise typer.Exit(e.exit_code) from None
    except OptkitError as e:
        if isinstance(e.__cause__, RuntimeError):  # the connection to a failed process
            raise typer.Exit(1) from None
        raise type(e)(f"rank {dist.rank}: {e}") from e


def _model_options(act: str | None, dropout: float | None, pairs: list[str]) -> dict:
    from optkit.errors import ConfigError

    options: dict = {}
    if act is not None:
        options["act"] = act
    if dropout is not None:
        options["dropout"] = dropout
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-opt expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = _parse_value(value.strip())
    return options


def _parse_value(text: str):
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
