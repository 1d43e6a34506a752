"""The `optkit benchmark` flow: measure several artifacts (.pt and .onnx) the same way, one row each.

Accuracy runs at one input size (--imgsz, else the first artifact's trained size); latency at
--latency-imgsz (default: the same), so a model trained small can be timed at its deployment size.
Every artifact runs at the same batch and is timed in interleaved rounds (optkit.measure.latency.
time_interleaved): each is prepared and warmed up once, then every round times each artifact's batch of
--runs runs, the order turned by one per round. Load that comes and goes on a shared machine then lands
on all rows alike: a row's speed-up is the median over rounds of (first artifact's latency / its
latency in the same round), and a row whose per-round ratios spread more than SPREAD_LIMIT is flagged.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optkit import limits
from optkit.errors import ConfigError

MAX_ARTIFACTS = 64
ROUND_WARMUP = 2  # untimed runs before each round's batch: the previous artifact's threads settle
SPREAD_LIMIT = 0.10  # flag a row when the IQR of its per-round speed-ups exceeds 10% of their median
FAKE_QUANT_NOTE = "fake quantization: runs in float, not a deployment format"
NO_GAIN_NOTE = "does not pay off"  # + " at N px: ...", for a speed-up below 1


@dataclass
class BenchmarkRequest:
    artifacts: list[str]
    data: str | None = None
    imgsz: int | None = None  # accuracy (and, without latency_imgsz, latency) input size
    batch: int = 1
    warmup: int = 10  # untimed runs per artifact before the first round
    runs: int = 10  # timed runs per artifact in each round
    threads: int | None = None
    rounds: int = 5
    latency_imgsz: int | None = None  # input size for latency; None: imgsz

    def validate(self) -> BenchmarkRequest:
        if not 1 <= len(self.artifacts) <= MAX_ARTIFACTS:
            raise ConfigError(f"give 1 to {MAX_ARTIFACTS} artifacts (.pt or .onnx)")
        # the CLI's bounds and words (optkit.limits): one message per mistake
        limits.TIMED_BATCH.check("--batch-size", self.batch)
        limits.RUNS.check("--runs", self.runs)
        limits.WARMUP.check("--warmup", self.warmup)
        limits.ROUNDS.check("--rounds", self.rounds)
        if self.threads is not None:
            limits.THREADS.check("--threads", self.threads)
        if self.latency_imgsz is not None:
            _check_latency_imgsz(self.latency_imgsz)
        return self


@dataclass
class Loaded:
    """An artifact ready to measure: a callable model plus what the file says about itself."""

    path: Path
    format: (
        str  # "pytorch" or "onnx", with " int8" for quantized ones (PyTorch: fake-quant, not for deployment)
    )
    model: object  # nn.Module or optkit.onnxrt.OrtModel (both: tensor in, logits out)
    names: list[str]
    imgsz: int
    params: int  # inference form: BatchNorm folded into the conv before it
    count_gflops: object  # callable(imgsz) -> GFLOPs of one image, or None
    task: str  # what the model does (optkit.tasks): how --data is read and measured


TimerFactory = Callable[[Loaded, int, BenchmarkRequest], Callable[[int, int], list[float]]]


def run_benchmark(req: BenchmarkRequest, make_timer: TimerFactory | None = None, progress=None) -> dict:
    """Measure every artifact; `make_timer(item, latency_imgsz, req)` builds each one's BatchTimer
    (default_timer; tests pass fakes). `progress`: optkit.report.progress (a step per accuracy run, one
    for the timing rounds)."""
    from optkit.measure.latency import time_interleaved
    from optkit.models.imgsz import check_imgsz
    from optkit.report.progress import Quiet

    progress = progress or Quiet()

    req.validate()
    loaded = [_load(path, req.threads) for path in req.artifacts]  # every file is checked before any work
    imgsz = check_imgsz(req.imgsz or loaded[0].imgsz, name="--imgsz")
    latency_imgsz = req.latency_imgsz or imgsz
    spec = _dataset(req.data, loaded, imgsz, progress.line)
    for item in loaded:
        _check_shapes(item, imgsz if spec is not None else None, latency_imgsz, req)
    timers = [(make_timer or default_timer)(item, latency_imgsz, req) for item in loaded]
    rows = [_describe(item, imgsz, latency_imgsz, spec, progress) for item in loaded]
    timing = f"timing {len(loaded)} artifacts at {latency_imgsz} px: warm-up, then {req.rounds} rounds"
    with progress.step(timing, total=req.rounds) as step:
        times = time_interleaved(
            timers, req.rounds, req.runs, req.warmup, ROUND_WARMUP, on_round=lambda r: step.advance(r > 0)
        )
    _add_latency(rows, times, req.batch, latency_imgsz)
    for row, label in zip(rows, short_labels(req.artifacts), strict=True):
        row["label"] = label
    add_int8_gain_notes(rows)
    return {
        "imgsz": imgsz,
        "latency_imgsz": latency_imgsz,
        "batch": req.batch,
        "data": req.data,
        "warmup": req.warmup,
        "rounds": req.rounds,
        "runs": req.runs,
        "round_warmup": min(ROUND_WARMUP, req.warmup),
        "spread_limit": SPREAD_LIMIT,
        "threads": req.threads,
        "rows": rows,
    }


def _check_latency_imgsz(size: int) -> None:
    from optkit.models.imgsz import MAX_IMGSZ

    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= MAX_IMGSZ or size % 32:
        raise ConfigError(f"--latency-imgsz must be a multiple of 32 between 32 and {MAX_IMGSZ}, got {size}")


def _check_shapes(
    item: Loaded, accuracy_imgsz: int | None, latency_imgsz: int, req: BenchmarkRequest
) -> None:
    """Refuse, before any work, an ONNX file that cannot take the batch or an input size asked for."""
    if not item.format.startswith("onnx"):
        return
    model = item.model
    if model.fixed_batch is not None and model.fixed_batch != req.batch:
        raise ConfigError(
            f"{model.path} was exported with a fixed batch of {model.fixed_batch}; use --batch-size "
            f"{model.fixed_batch} or export with --dynamic"
        )
    if accuracy_imgsz is not None or req.latency_imgsz is None:
        from optkit.limits import options_named
        from optkit.workflows.val import ONNX_SIZE_FLAGS

        with options_named(ONNX_SIZE_FLAGS):
            model.check_input_size(accuracy_imgsz or latency_imgsz)
    size = model.fixed_size()
    if size is not None and size != (latency_imgsz, latency_imgsz):
        raise ConfigError(
            f"{model.path} takes a fixed {size[0]}x{size[1]} input, not {latency_imgsz}x{latency_imgsz} "
            f"(--latency-imgsz): export it with --dynamic, or time it at {size[0]}"
        )


def _describe(item: Loaded, imgsz: int, latency_imgsz: int, spec, progress) -> dict:
    """The row's file facts (GFLOPs at the timed size) and, with a dataset, its accuracy at `imgsz`
    (the metrics of the model's task: top-1 and top-5 for a classifier)."""
    from optkit.measure.validate import measure_on_val

    row = {
        "path": str(item.path),
        "format": item.format,
        "file_bytes": item.path.stat().st_size,
        "params": item.params,
        "gflops": item.count_gflops(latency_imgsz),
        "gflops_at_imgsz": item.count_gflops(imgsz),
        "top1": None,
        "top5": None,
    }
    if spec is not None:
        with progress.step(f"top-1 of {item.path} at {imgsz} px"):
            task = _task(item)
            metrics = measure_on_val(item.model, task, spec, item.names, imgsz)
        row.update({m.key: metrics[m.key] for m in task.metrics})
    return row


def _add_latency(rows: list[dict], times: list[list[list[float]]], batch: int, latency_imgsz: int) -> None:
    """Median/p90 over all timed runs, and the paired per-round speed-up against the first artifact."""
    import statistics

    from optkit.measure.latency import latency_stats, speedup_stats

    round_ms = [[statistics.median(batch_ms) for batch_ms in artifact] for artifact in times]
    for i, (row, artifact) in enumerate(zip(rows, times, strict=True)):
        stats = latency_stats([ms for batch_ms in artifact for ms in batch_ms], batch)
        speed = speedup_stats(round_ms[0], round_ms[i])
        spread = speed["speedup_spread"]
        row.update(
            latency_ms=stats["median_ms"], p90_ms=stats["p90_ms"], round_latency_ms=round_ms[i], **speed
        )
        row["unstable"] = spread is not None and spread > SPREAD_LIMIT
        row["notes"] = row_notes(row, latency_imgsz, first=i == 0)


def row_notes(row: dict, latency_imgsz: int, first: bool) -> list[str]:
    """Why a row's figure should not be read as a deployment speed-up."""
    notes = []
    if row["format"] == "pytorch int8":
        notes.append(FAKE_QUANT_NOTE)
    if not first and row["speedup"] < 1:
        notes.append(f"{NO_GAIN_NOTE} at {latency_imgsz} px: slower than the first artifact at this size")
    return notes


INT8_GAIN = 1.05  # an INT8 ONNX file less than 5% faster than the float ONNX file in the table gains nothing


def add_int8_gain_notes(rows: list[dict]) -> None:
    """An INT8 ONNX row is judged against the first float ONNX row (the file it was made to replace),
    by the median of their paired per-round ratios: a small model at a small size can gain nothing."""
    float_rows = [r for r in rows if r["format"] == "onnx"]
    if not float_rows:
        return
    base = float_rows[0]
    for row in rows:
        if row["format"] != "onnx int8":
            continue
        pairs = zip(base["round_latency_ms"], row["round_latency_ms"], strict=True)
        gain = statistics.median(b / m for b, m in pairs)
        row["speedup_vs_float_onnx"] = gain
        if gain < INT8_GAIN:
            row["notes"].append(f"no int8 gain over {base['label']} ({gain:.2f}x)")


def short_labels(paths: list[str]) -> list[str]:
    """Each path's shortest suffix (file name, then parent/file, ...) that no other path ends with; the
    same path given twice gets ' (2)', ' (3)', ..."""
    parts = [Path(p).parts for p in paths]
    labels = []
    for i, mine in enumerate(parts):
        others = [theirs for j, theirs in enumerate(parts) if j != i and theirs != mine]
        k = next((k for k in range(1, len(mine) + 1) if all(o[-k:] != mine[-k:] for o in others)), len(mine))
        label = str(Path(*mine[-k:])) if mine else str(paths[i])
        copies = sum(1 for earlier in parts[:i] if earlier == mine)
        labels.append(f"{label} ({copies + 1})" if copies else label)
    return labels


def default_timer(item: Loaded, imgsz: int, req: BenchmarkRequest) -> Callable[[int, int], list[float]]:
    """A BatchTimer for one artifact: eager PyTorch, or `InferenceSession.run` on one fixed numpy batch."""
    if item.format.startswith("onnx"):
        return _onnx_timer(item.model, imgsz, req.batch)
    from optkit.measure.latency import torch_batch_timer

    return torch_batch_timer(item.model, imgsz, batch=req.batch, threads=req.threads)


def _load(path: str, threads: int | None) -> Loaded:
    from optkit.formats import model_format

    path = Path(path)
    if model_format(path) == "onnx":  # by content: a checkpoint renamed .onnx is still one
        return _load_onnx(path, threads)
    from optkit.checkpoint import build_model
    from optkit.measure.flops import count_flops
    from optkit.models import count_params
    from optkit.quant.quantizers import quantize_entry
    from optkit.workflows.inputs import load_optkit_checkpoint

    ckpt = load_optkit_checkpoint(path, "benchmark")
    model = build_model(ckpt)
    counted = inference_form(model)
    return Loaded(
        path,
        "pytorch int8" if quantize_entry(ckpt.transforms) else "pytorch",
        model,
        ckpt.names,
        ckpt.imgsz,
        count_params(counted),
        lambda imgsz: count_flops(counted, imgsz),
        ckpt.task,
    )


def inference_form(model):
    """A copy with BatchNorm folded (what ONNX Runtime runs), so that a .pt and its .onnx count alike."""
    from optkit.stages.fuse import FuseConfig, fuse

    return fuse(model, FuseConfig(check=False))[0]


def _load_onnx(path: Path, threads: int | None) -> Loaded:
    from optkit.measure.onnx_flops import count_graph
    from optkit.onnxrt import load_onnx, load_optkit_onnx
    from optkit.workflows.val import onnx_task

    model, meta = load_optkit_onnx(path, threads)
    proto = load_onnx(path, check=False)
    params = count_graph(proto).params
    int8 = any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    return Loaded(
        path,
        "onnx int8" if int8 else "onnx",
        model,
        meta["names"],
        int(meta.get("imgsz") or 0) or 224,
        params,
        lambda imgsz: count_graph(proto, [1, 3, imgsz, imgsz]).gflops,
        onnx_task(meta),
    )


def _dataset(data: str | None, loaded: list[Loaded], imgsz: int, log):
    """The dataset every artifact is measured on, and what measuring it would refuse, refused before
    any work: classes that are not the models', too few of them, a val split without images."""
    if not data:
        return None
    from optkit.measure.validate import check_classes

    tasks = sorted({item.task for item in loaded})
    if len(tasks) > 1:
        kinds = " and ".join(tasks)
        raise ConfigError(f"--data measures every artifact on one dataset; these are {kinds} models")
    task = _task(loaded[0])
    spec = task.resolve_data(data, log=log)
    for item in loaded:
        check_classes(spec, item.names)
    task.check_classes(list(spec.names), spec.root)
    task.image_dataset(spec, list(spec.names), imgsz, "val")  # lists the split's images, decodes none
    return spec


def _task(item: Loaded):
    """The artifact's task, which reads the dataset and measures the model (docs/architecture.md)."""
    from optkit.workflows.val import task_to_measure

    return task_to_measure(item.task, item.path, item.format, command="benchmark --data")


def _onnx_timer(model, imgsz: int, batch: int) -> Callable[[int, int], list[float]]:
    """ms per `InferenceSession.run` of one fixed random batch (threads were set on the session)."""
    import numpy as np

    from optkit.measure.latency import time_calls

    x = np.random.default_rng(0).standard_normal((batch, 3, imgsz, imgsz)).astype(model.input_dtype)
    feed = {model.input_name: x}
    return lambda warmup, runs: time_calls(lambda: model.session.run([model.output_name], feed), warmup, runs)
