"""The `optkit benchmark` flow: measure several artifacts (.pt and .onnx) the same way, one row each.

Artifacts of different tasks (classifiers and detectors) share one table. Each row's accuracy is its
task's metrics (optkit.tasks: top-1 and top-5 for a classifier, mAP50-95 and mAP50 for a detector) on the
dataset its task reads: `--data` is given once per task, and each one is matched to the task that reads
it (`match_datasets`). Accuracy runs at each artifact's own trained size (--imgsz: one size for all);
latency at --latency-imgsz (default: the accuracy size), so a model trained small can be timed at its
deployment size.

Every artifact runs at the same batch and is timed in interleaved rounds (optkit.measure.latency.
time_interleaved): each is prepared and warmed up once, then every round times each artifact's batch of
--runs runs, the order turned by one per round; the artifacts of one task take their rounds together,
then the next task's. Load that comes and goes on a shared machine then lands
on all rows alike: a row's speed-up is the median over rounds of (its reference's latency / its latency
in the same round), the reference being the first artifact of the same task (a classifier against a
detector means nothing), and a row whose per-round ratios spread more than SPREAD_LIMIT is flagged.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optkit import limits
from optkit.errors import ConfigError, DatasetError

MAX_ARTIFACTS = 64
ROUND_WARMUP = 2  # untimed runs before each round's batch: the previous artifact's threads settle
SPREAD_LIMIT = 0.10  # flag a row when the IQR of its per-round speed-ups exceeds 10% of their median
FAKE_QUANT_NOTE = "fake quantization: runs in float, not a deployment format"
NO_GAIN_NOTE = "does not pay off"  # + " at N px: ...", for a speed-up below 1
PAIRED_NOTE = "top-1 image by image"  # + " against <reference>: ...", a classifier row (measure.paired)
SIZE_NOTE = "the speed-up compares different sizes"  # a row timed at another size than its reference
SHOWN_METRICS = 2  # accuracy figures a table row shows (headline_metrics); --json and --csv carry all


@dataclass
class BenchmarkRequest:
    artifacts: list[str]
    data: list[str] | str | None = None  # --data, at most one per task (a str: one dataset)
    imgsz: int | None = None  # accuracy (and, without latency_imgsz, latency) size; None: each one's own
    batch: int = 1
    warmup: int = 10  # untimed runs per artifact before the first round
    runs: int = 10  # timed runs per artifact in each round
    threads: int | None = None
    rounds: int = 5
    latency_imgsz: int | None = None  # input size for latency; None: the accuracy size

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
        specs = self.datasets()
        repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
        if repeated:
            raise ConfigError(f"--data {repeated[0]} is given twice; give each dataset once")
        return self

    def datasets(self) -> list[str]:
        """The --data values, in the order given ([] for none)."""
        if self.data is None:
            return []
        return [self.data] if isinstance(self.data, str) else [str(spec) for spec in self.data]


@dataclass
class Loaded:
    """An artifact ready to measure: a callable model plus what the file says about itself."""

    path: Path
    format: (
        str  # "pytorch" or "onnx", with " int8" for quantized ones (PyTorch: fake-quant, not for deployment)
    )
    model: object  # nn.Module or optkit.onnxrt.OrtModel (both: tensor in, the task's outputs out)
    names: list[str]
    imgsz: int
    params: int  # inference form: BatchNorm folded into the conv before it
    count_gflops: object  # callable(imgsz) -> GFLOPs of one image, or None
    task: str  # what the model does (optkit.tasks): which --data it reads, how it is measured
    preprocess: dict | None = None  # {"mean", "std"} the model reads images with; None: its task's


@dataclass
class Dataset:
    """One --data value and what its task read from it (`task.resolve_data`)."""

    spec: str
    task: object  # the optkit.tasks.Task that reads it
    data: object


TimerFactory = Callable[[Loaded, int, BenchmarkRequest], Callable[[int, int], list[float]]]


def run_benchmark(req: BenchmarkRequest, make_timer: TimerFactory | None = None, progress=None) -> dict:
    """Measure every artifact; `make_timer(item, latency_imgsz, req)` builds each one's BatchTimer
    (default_timer; tests pass fakes). `progress`: optkit.report.progress (a step per accuracy run, one
    for the timing rounds).

    Returns {"imgsz", "latency_imgsz" (each the size every row shares, else None), "batch", "data" (the
    --data values), "tasks" ({task: its figures, see task_facts}), the timing settings, "rows"}; a row
    carries its task, sizes, file facts, every metric of its task (None without a dataset), latency and
    its speed-up against "reference" (the label of the first row of its task)."""
    from optkit.measure.latency import time_interleaved
    from optkit.models.imgsz import check_imgsz
    from optkit.report.progress import Quiet

    progress = progress or Quiet()

    req.validate()
    loaded = [_load(path, req.threads) for path in req.artifacts]  # every file is checked before any work
    sizes = [check_imgsz(req.imgsz or item.imgsz, name="--imgsz") for item in loaded]
    latency_sizes = [req.latency_imgsz or size for size in sizes]
    datasets = match_datasets(req.datasets(), loaded, sizes, progress.line)
    for item, size, latency_imgsz in zip(loaded, sizes, latency_sizes, strict=True):
        _check_shapes(item, size if item.task in datasets else None, latency_imgsz, req)
    make_timer = make_timer or default_timer
    timers = [make_timer(item, n, req) for item, n in zip(loaded, latency_sizes, strict=True)]
    rows = [
        _describe(item, size, latency_imgsz, datasets.get(item.task), progress)
        for item, size, latency_imgsz in zip(loaded, sizes, latency_sizes, strict=True)
    ]
    for row, label in zip(rows, short_labels(req.artifacts), strict=True):
        row["label"] = label
    at = _sizes_text(latency_sizes)
    timing = f"timing {len(loaded)} artifacts at {at}: warm-up, then {req.rounds} rounds"
    groups = _task_groups(loaded)
    with progress.step(timing, total=req.rounds * len(groups)) as step:
        times = [None] * len(loaded)
        for group in groups:  # each task's artifacts take turns among themselves (speed-ups are per task)
            group_times = time_interleaved(
                [timers[i] for i in group], req.rounds, req.runs, req.warmup, ROUND_WARMUP,
                on_round=lambda r: step.advance(r > 0),
            )  # fmt: skip
            for i, t in zip(group, group_times, strict=True):
                times[i] = t
    _add_latency(rows, times, req.batch)
    add_int8_gain_notes(rows)
    add_paired_top1(rows)
    return {
        "imgsz": _shared(sizes),
        "latency_imgsz": _shared(latency_sizes),
        "batch": req.batch,
        "data": req.datasets(),
        "tasks": {name: task_facts(name, rows) for name in dict.fromkeys(row["task"] for row in rows)},
        "warmup": req.warmup,
        "rounds": req.rounds,
        "runs": req.runs,
        "round_warmup": min(ROUND_WARMUP, req.warmup),
        "spread_limit": SPREAD_LIMIT,
        "threads": req.threads,
        "rows": rows,
    }


def _shared(values: list[int]) -> int | None:
    """The value every row has, or None when they differ."""
    return values[0] if len(set(values)) == 1 else None


def _sizes_text(sizes: list[int]) -> str:
    """ "224 px", or "64 and 128 px" when rows are timed at different sizes."""
    distinct = sorted(set(sizes))
    return " and ".join(str(n) for n in distinct) + " px"


def headline_metrics(task) -> list:
    """The figures a one-line summary of `task` shows (SHOWN_METRICS of them): its fitness metric first,
    then the one listed next to it (classify: top-1, top-5; detect: mAP50-95, mAP50)."""
    metrics = list(task.metrics)
    keys = [m.key for m in metrics]
    if task.fitness_key not in keys:
        return metrics[:SHOWN_METRICS]
    i = keys.index(task.fitness_key)
    order = [i] + [j for step in range(1, len(keys)) for j in (i + step, i - step) if 0 <= j < len(keys)]
    return [metrics[j] for j in order[:SHOWN_METRICS]]


def task_facts(name: str, rows: list[dict]) -> dict:
    """What the report needs to show a task's rows: every metric (key, label, percent), the keys a table
    row shows, the fitness metric (the plot's y axis), and the label of the task's first row (the
    reference of its speed-ups). A task this optkit does not know has no metrics."""
    task = _known_task(name)
    reference = next(row["label"] for row in rows if row["task"] == name)
    if task is None:
        return {"metrics": [], "shown": [], "fitness_key": None, "reference": reference}
    return {
        "metrics": [{"key": m.key, "label": m.label, "percent": m.percent} for m in task.metrics],
        "shown": [m.key for m in headline_metrics(task)],
        "fitness_key": task.fitness_key,
        "reference": reference,
    }


def _task_groups(loaded: list) -> list[list[int]]:
    """Artifact indices by task, in order of first appearance: the rounds of one task's artifacts are
    timed together, so a big detector's runs never sit between two classifiers' (its memory traffic
    would land on whichever classifier follows it in a round)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(loaded):
        groups.setdefault(item.task, []).append(i)
    return list(groups.values())


def _check_latency_imgsz(size: int) -> None:
    from optkit.models.imgsz import MAX_IMGSZ

    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= MAX_IMGSZ or size % 32:
        raise ConfigError(f"--latency-imgsz must be a multiple of 32 between 32 and {MAX_IMGSZ}, got {size}")


def _check_shapes(
    item: Loaded, accuracy_imgsz: int | None, latency_imgsz: int, req: BenchmarkRequest
) -> None:
    """Refuse, before any work, an ONNX file or IR that cannot take the batch or an input size asked for."""
    if not item.format.startswith(("onnx", "openvino")):
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


def _describe(item: Loaded, imgsz: int, latency_imgsz: int, dataset: Dataset | None, progress) -> dict:
    """The row's file facts (GFLOPs at the timed size) and, with a dataset of its task, every metric of
    that task at `imgsz` (None without one)."""
    from optkit.measure.validate import measure_on_val

    task = _known_task(item.task)
    gflops = item.count_gflops(latency_imgsz)
    row = {
        "path": str(item.path),
        "format": item.format,
        "task": item.task,
        "imgsz": imgsz,
        "latency_imgsz": latency_imgsz,
        "data": None,
        "file_bytes": _file_bytes(item),
        "params": item.params,
        "gflops": gflops,
        "gflops_at_imgsz": gflops if imgsz == latency_imgsz else item.count_gflops(imgsz),
        **{m.key: None for m in (task.metrics if task else ())},
    }
    if dataset is not None:
        task = dataset.task
        label = headline_metrics(task)[0].label if task.metrics else "accuracy"
        options = {"per_image": True} if task.judges_each_image else None
        with progress.step(f"{label} of {item.path} at {imgsz} px"):
            metrics = measure_on_val(
                item.model, task, dataset.data, item.names, imgsz, preprocess=item.preprocess,
                eval_options=options,
            )  # fmt: skip
        row.update({m.key: metrics[m.key] for m in task.metrics}, data=dataset.spec)
        if "correct" in metrics:
            row["_correct"] = metrics["correct"]  # add_paired_top1 reads and removes it
    return row


def _add_latency(rows: list[dict], times: list[list[list[float]]], batch: int) -> None:
    """Median/p90 over all timed runs, and the paired per-round speed-up against the row's reference:
    the first row of its task."""
    from optkit.measure.latency import latency_stats, speedup_stats

    round_ms = [[statistics.median(batch_ms) for batch_ms in artifact] for artifact in times]
    firsts = {}  # task -> index of its first row
    for i, row in enumerate(rows):
        firsts.setdefault(row["task"], i)
    mixed = len(firsts) > 1
    for i, (row, artifact) in enumerate(zip(rows, times, strict=True)):
        ref = firsts[row["task"]]
        stats = latency_stats([ms for batch_ms in artifact for ms in batch_ms], batch)
        speed = speedup_stats(round_ms[ref], round_ms[i])
        spread = speed["speedup_spread"]
        row.update(
            latency_ms=stats["median_ms"],
            p90_ms=stats["p90_ms"],
            round_latency_ms=round_ms[i],
            reference=rows[ref]["label"],
            **speed,
        )
        row["unstable"] = spread is not None and spread > SPREAD_LIMIT
        reference = f"the first {row['task']} artifact" if mixed else "the first artifact"
        row["notes"] = row_notes(row, row["latency_imgsz"], first=i == ref, reference=reference)
        if i != ref and rows[ref]["latency_imgsz"] != row["latency_imgsz"]:
            row["notes"].append(
                f"timed at {row['latency_imgsz']} px, {rows[ref]['label']} at {rows[ref]['latency_imgsz']} "
                f"px: {SIZE_NOTE} (give --latency-imgsz)"
            )


def row_notes(row: dict, latency_imgsz: int, first: bool, reference: str = "the first artifact") -> list[str]:
    """Why a row's figure should not be read as a deployment speed-up; `reference`: what its speed-up
    is measured against."""
    notes = []
    if row["format"] == "pytorch int8":
        notes.append(FAKE_QUANT_NOTE)
    if not first and row["speedup"] < 1:
        notes.append(f"{NO_GAIN_NOTE} at {latency_imgsz} px: slower than {reference} at this size")
    return notes


INT8_GAIN = 1.05  # an INT8 ONNX file less than 5% faster than the float ONNX file in the table gains nothing


def add_int8_gain_notes(rows: list[dict]) -> None:
    """An INT8 ONNX row is judged against the first float ONNX row of its task (the file it was made to
    replace), by the median of their paired per-round ratios: a small model at a small size can gain
    nothing."""
    bases = {}  # task -> its first float ONNX row
    for row in rows:
        if row["format"] == "onnx":
            bases.setdefault(row.get("task"), row)
    for row in rows:
        base = bases.get(row.get("task"))
        if row["format"] != "onnx int8" or base is None:
            continue
        pairs = zip(base["round_latency_ms"], row["round_latency_ms"], strict=True)
        gain = statistics.median(b / m for b, m in pairs)
        row["speedup_vs_float_onnx"] = gain
        if gain < INT8_GAIN:
            row["notes"].append(f"no int8 gain over {base['label']} ({gain:.2f}x)")


def add_paired_top1(rows: list[dict]) -> None:
    """Each classifier row measured on the same images as its reference (the first row of its task)
    gets "paired_top1" (optkit.measure.paired: the images only one of the two gets right, the
    difference's 95% interval, McNemar's p) and, when any image tells them apart, a note saying whether
    chance explains the difference: two INT8 files a few val images apart are often equally accurate."""
    from optkit.measure.paired import paired_top1

    references = {}
    for row in rows:
        references.setdefault(row["task"], row)
    for row in rows:
        ref = references[row["task"]]
        mine, theirs = row.get("_correct"), ref.get("_correct")
        if row is ref or mine is None or theirs is None or len(mine) != len(theirs):
            continue
        paired = paired_top1(mine, theirs)
        row["paired_top1"] = {k: v for k, v in paired.items() if k not in ("top1_a", "top1_b")}
        if paired["only_a"] + paired["only_b"]:
            row["notes"].append(paired_note(paired, ref["label"]))
    for row in rows:
        row.pop("_correct", None)


def paired_note(paired: dict, reference: str) -> str:
    low, high = (100 * v for v in paired["diff_ci95"])
    p = paired["mcnemar_p"]
    verdict = "chance explains the difference" if p >= 0.05 else "more than chance"
    return (
        f"{PAIRED_NOTE} against {reference}: {paired['only_a']} of {paired['images']} images only this one "
        f"gets right, {paired['only_b']} only {reference}; difference {100 * paired['diff']:+.2f} pp "
        f"(95% interval {low:+.2f} to {high:+.2f}), McNemar p {p:.2f}: {verdict}"
    )


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
    if item.format.startswith("openvino"):
        from optkit.measure.latency import time_calls

        call = item.model.timed_call(req.batch, imgsz)
        return lambda warmup, runs: time_calls(call, warmup, runs)
    from optkit.measure.latency import torch_batch_timer

    return torch_batch_timer(item.model, imgsz, batch=req.batch, threads=req.threads)


def _load(path: str, threads: int | None) -> Loaded:
    from optkit.formats import model_format
    from optkit.ovrt import is_ir

    path = Path(path)
    if is_ir(path):
        return _load_openvino(path, threads)
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
        dict(ckpt.preprocess) or None,
    )


def inference_form(model):
    """A copy with BatchNorm folded (what ONNX Runtime runs), so that a .pt and its .onnx count alike."""
    from optkit.stages.fuse import FuseConfig, fuse

    return fuse(model, FuseConfig(check=False))[0]


def _load_onnx(path: Path, threads: int | None) -> Loaded:
    from optkit.measure.detect_eval import with_graph_nms
    from optkit.measure.onnx_flops import count_graph
    from optkit.onnxrt import load_onnx, load_optkit_onnx
    from optkit.workflows.val import onnx_task

    model, meta = load_optkit_onnx(path, threads)
    model = with_graph_nms(model, meta)  # an `export --nms` file returns final detections
    proto = load_onnx(path, check=False)
    params = count_graph(proto).params
    int8 = any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    preprocess = meta.get("preprocess")
    return Loaded(
        path,
        "onnx int8" if int8 else "onnx",
        model,
        meta["names"],
        int(meta.get("imgsz") or 0) or 224,
        params,
        lambda imgsz: count_graph(proto, [1, 3, imgsz, imgsz]).gflops,
        onnx_task(meta),
        preprocess if isinstance(preprocess, dict) and preprocess else None,
    )


def _file_bytes(item: Loaded) -> int:
    """Bytes a user ships: the file, or an IR's .xml and .bin together."""
    if item.format.startswith("openvino"):
        xml = item.model.path
        return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return item.path.stat().st_size


def _load_openvino(path: Path, threads: int | None) -> Loaded:
    """An OpenVINO IR (folder or .xml) written by `optkit export --format openvino`; its format names
    the precision OpenVINO runs float layers in on this CPU (its default: bf16 where the CPU has it)."""
    from optkit.ovrt import OvModel, count_constants
    from optkit.workflows.val import onnx_task

    model = OvModel(path, threads)
    meta = model.metadata
    if not isinstance(meta.get("names"), list) or not meta["names"]:
        raise ConfigError(f"{path} was not exported by optkit (no class names in its rt_info)")
    int8 = any(op.get_type_name() == "FakeQuantize" for op in model.model.get_ops())
    preprocess = meta.get("preprocess")
    return Loaded(
        path,
        f"openvino{' int8' if int8 else ''} ({model.runtime_precision()})",
        model,
        meta["names"],
        int(meta.get("imgsz") or 0) or 224,
        count_constants(model.model),
        lambda imgsz: None,  # no FLOP counter reads an IR
        onnx_task(meta),
        preprocess if isinstance(preprocess, dict) and preprocess else None,
    )


def match_datasets(specs: list[str], loaded: list[Loaded], sizes: list[int], log) -> dict[str, Dataset]:
    """{task: its Dataset}: each --data read by the one task of the artifacts that reads it (each
    dataset is read once), and what measuring would refuse, refused before any work: an artifact with no
    dataset of its task, two datasets of one task, classes that are not the model's, too few of them, a
    val split without images."""
    if not specs:
        return {}
    from optkit.measure.validate import check_classes

    tasks = {}  # task name -> Task, in the artifacts' order; a task this optkit cannot measure is refused
    for item in loaded:
        tasks.setdefault(item.task, _task(item))
    found: dict[str, Dataset] = {}
    for spec in specs:
        dataset = _read_with_its_task(spec, list(tasks.values()), loaded, log)
        name = dataset.task.name
        if name in found:
            raise ConfigError(
                f"--data {found[name].spec} and --data {spec} are both {name} datasets; "
                "give one --data per task"
            )
        found[name] = dataset
    for item in loaded:
        if item.task not in found:
            default = tasks[item.task].default_data
            raise ConfigError(
                f"--data: no {item.task} dataset for {item.path} (a {item.task} model); add --data "
                f"{default or 'DATASET'} or a dataset of yours that {item.task} models read"
            )
        check_classes(found[item.task].data, item.names)
    for name, dataset in found.items():
        names = list(dataset.data.names)
        size = next(n for item, n in zip(loaded, sizes, strict=True) if item.task == name)
        dataset.task.check_classes(names, dataset.data.root)
        dataset.task.image_dataset(dataset.data, names, size, "val")  # lists the split's images, decodes none
    return found


def _read_with_its_task(spec: str, tasks: list, loaded: list[Loaded], log) -> Dataset:
    """`spec` read by the first of `tasks` that reads it with the classes of one of its artifacts (a
    task that cannot read it refuses at once, by its form: a data.yaml is no class-folder tree). With one
    task its refusal is the message; with several, each task's refusal, on one line."""
    if len(tasks) == 1:
        return Dataset(spec, tasks[0], tasks[0].resolve_data(spec, log=log, splits=("val",)))
    refusals, other_classes = [], None
    for task in tasks:
        try:
            data = task.resolve_data(spec, log=log, splits=("val",))
        except DatasetError as e:
            refusals.append(f"{task.name}: {e}")
            continue
        if any(list(data.names) == list(item.names) for item in loaded if item.task == task.name):
            return Dataset(spec, task, data)
        other_classes = other_classes or Dataset(spec, task, data)  # refused by its classes later
    if other_classes is not None:
        return other_classes
    kinds = " or ".join(task.name for task in tasks)
    raise DatasetError(f"--data {spec} is no {kinds} dataset ({'; '.join(refusals)})")


def _task(item: Loaded):
    """The artifact's task, which reads the dataset and measures the model (docs/architecture.md)."""
    from optkit.workflows.val import task_to_measure

    return task_to_measure(item.task, item.path, item.format, command="benchmark --data")


def _known_task(name: str):
    """The registered task called `name`, or None (a model this optkit cannot measure is still timed)."""
    from optkit.errors import CheckpointError
    from optkit.tasks import get_task

    try:
        return get_task(name)
    except CheckpointError:
        return None


def _onnx_timer(model, imgsz: int, batch: int) -> Callable[[int, int], list[float]]:
    """ms per `InferenceSession.run` of one fixed random batch (threads were set on the session)."""
    import numpy as np

    from optkit.measure.latency import time_calls

    x = np.random.default_rng(0).standard_normal((batch, 3, imgsz, imgsz)).astype(model.input_dtype)
    feed = {model.input_name: x}
    return lambda warmup, runs: time_calls(lambda: model.session.run([model.output_name], feed), warmup, runs)
