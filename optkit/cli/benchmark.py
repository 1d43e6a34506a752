"""`optkit benchmark`: compare artifacts (.pt and .onnx) side by side in one table."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def benchmark(
    artifacts: Annotated[list[str], typer.Argument(help="Checkpoints (.pt) and ONNX files (.onnx).")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Dataset whose val split measures accuracy; once per task (e.g. builtin:shapes for the "
            "classifiers, builtin:shapes-det or a data.yaml for the detectors).",
        ),
    ] = None,
    imgsz: Annotated[
        int | None,
        typer.Option(
            "--imgsz", help="Measure every artifact at this size (default: each one's trained size)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per timed run.")] = 1,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs of each artifact first.")] = 10,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs of each artifact per round.")] = 10,
    rounds: Annotated[
        int, typer.Option("--rounds", help="Interleaved rounds (artifacts take turns, order rotated).")
    ] = 5,
    latency_imgsz: Annotated[
        int | None,
        typer.Option(
            "--latency-imgsz", help="Time every artifact at this size (default: its accuracy size)."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for both backends.")] = None,
    csv_path: Annotated[
        str | None, typer.Option("--csv", help="Also write the rows to this CSV file.")
    ] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Accuracy-vs-latency plot (PNG).")] = None,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """Benchmark: format, size, params, GFLOPs, accuracy (top-1 / mAP50-95 with --data), latency and
    speed-up vs the first artifact of the same task (the median of per-round ratios; rows whose rounds
    disagree are marked)."""
    from optkit.report.benchmark import print_benchmark, write_csv, write_plot
    from optkit.report.console import emit_json
    from optkit.report.progress import StepDisplay
    from optkit.workflows.benchmark import BenchmarkRequest, run_benchmark
    from optkit.workflows.outputs import check_outputs

    request = BenchmarkRequest(
        artifacts, data, imgsz, batch_size, warmup, runs, threads, rounds, latency_imgsz
    )
    check_outputs({"--csv": csv_path, "--plot": plot})  # before any timing
    with StepDisplay() as progress:
        result = run_benchmark(request, progress=progress)
    if csv_path:
        write_csv(result, csv_path)
    if plot:
        write_plot(result, plot)
    emit_json(result) if json_out else print_benchmark(result)
