"""`optkit deploy`: the fastest ONNX file (or OpenVINO IR) within an accuracy budget, searched and measured
on the target runtime (optkit.workflows.deploy)."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def deploy(
    weights: Annotated[
        str, typer.Argument(help="An optkit .pt checkpoint (float) of a classifier or detector.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="The dataset: train split for calibration and fine-tuning, val split for accuracy "
            "(class folders, builtin:NAME or a YOLO data.yaml).",
        ),
    ],
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop",
            help="Accuracy you accept to lose against the fp32 ONNX file, in points of the task's fitness "
            "metric (top-1 percentage points; mAP50-95 x 100).",
        ),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Runtime the file is made for, validated and timed on: onnxruntime (an .onnx file) or "
            "openvino (an IR folder).",
        ),
    ] = "onnxruntime",
    imgsz: Annotated[
        int | None, typer.Option("--imgsz", help="Latency size in pixels (default: the checkpoint's).")
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option("--time-budget", help="Stop starting candidates after this long (90s, 20m, 1.5h)."),
    ] = None,
    work: Annotated[
        str | None, typer.Option("--work", help="Work folder (default: runs/deploy/<stem>); reruns resume.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="The chosen .onnx (default: <stem>-deploy.onnx); with --target openvino an IR folder "
            "(default: <stem>-deploy_openvino/).",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="The runtime's threads when timing (default: its own).")
    ] = None,
    prune: Annotated[
        list[float] | None,
        typer.Option(
            "--prune", help="Structured channel ratios tried in order (repeatable; default 0.3, 0.5)."
        ),
    ] = None,
    no_prune: Annotated[bool, typer.Option("--no-prune", help="Try no pruning.")] = False,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs", help="Fine-tune epochs after each prune (a pruned model needs them)."
        ),
    ] = 10,
    qat_epochs: Annotated[
        int, typer.Option("--qat-epochs", help="QAT epochs of the back-off (0: none).")
    ] = 1,
    fraction: Annotated[
        float, typer.Option("--fraction", help="Share of the train split fine-tuning and QAT read.")
    ] = 1.0,
    num_images: Annotated[int, typer.Option("--num-images", help="Calibration images.")] = 256,
    batch_size: o.BatchSize = 32,
    workers: o.Workers = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved timing rounds against fp32.")] = 5,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per file and round.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per file before the rounds.")] = 5,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Deploy: search prune / PTQ / float-kept layers / QAT candidates, measure each exported file, and
    write the fastest one within --max-drop (exit 1, nothing written, when none is)."""
    from optkit.report.console import emit_json
    from optkit.report.deploy import print_deploy
    from optkit.report.progress import StepDisplay
    from optkit.workflows.deploy import DEFAULT_PRUNE, DeployError, DeployRequest, run_deploy

    if no_prune and prune:
        from optkit.errors import ConfigError

        raise ConfigError("--no-prune and --prune contradict each other; give one of them")
    request = DeployRequest(
        weights=weights,
        data=data,
        max_drop=max_drop,
        target=target,
        imgsz=imgsz,
        time_budget=time_budget,
        work=work,
        output=output,
        threads=threads,
        prune_ratios=[] if no_prune else list(prune or DEFAULT_PRUNE),
        finetune_epochs=finetune_epochs,
        qat_epochs=qat_epochs,
        fraction=fraction,
        num_images=num_images,
        batch_size=batch_size,
        workers=workers,
        rounds=rounds,
        runs=runs,
        warmup=warmup,
    )
    with StepDisplay() as progress:  # one line per candidate step on stderr
        result = run_deploy(request, progress=progress)
    emit_json(result) if json_out else print_deploy(result)
    if result["chosen"] is None:
        raise DeployError(result["error"])
