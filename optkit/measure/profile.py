"""`optkit profile` as a library call: what to profile, then params, FLOPs, latency, memory, per-layer
time, a batch-size sweep and autobatch, returned as one dict (the schema is in `optkit.report.profile`).

Sources: an optkit .pt checkpoint (PyTorch), an .onnx file (ONNX Runtime) or a zoo model name (random
weights, 1000 classes). With no source, the newest `runs/**/weights/best.pt` under the working folder is
profiled, else the default zoo model; the result says which and why.

Params and FLOPs are counted on the inference form of the network, BatchNorm folded into the conv/linear
before it, for PyTorch and ONNX alike (see `optkit.measure.profile_torch` and `optkit.measure.onnx_flops`):
that is what makes a checkpoint, its fused checkpoint and its ONNX export report the same figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from optkit import __version__
from optkit.errors import CheckpointError, ConfigError, ModelError

DEFAULT_MODEL = "yolo-cls-n"
ZOO_CLASSES = 1000  # zoo models are profiled with an ImageNet-sized head
MAX_BATCH = 1024  # images; larger batches are refused before anything is allocated
FLOPS_TOLERANCE = 0.02  # thop and FlopCounterMode may differ by this fraction before both are shown


@dataclass
class ProfileConfig:
    source: str | None = None  # .pt / .onnx path or zoo model name; None: newest runs/**/best.pt or default
    imgsz: int | None = None  # pixels; None: the source's own (checkpoint, zoo default, ONNX graph/metadata)
    batch_size: int = 1  # images per pass for counts, latency, memory and per-layer time
    batch_sizes: list[int] = field(default_factory=list)  # sweep; empty: no sweep
    warmup: int = 10  # untimed passes before each timed loop
    runs: int = 50  # timed passes
    threads: int | None = None  # intra-op threads (torch / ONNX Runtime); None: the backend's default
    device: str = ""  # "", cpu, 0, cuda:0 (ONNX: CPU unless CUDA is asked for)
    backward: bool = False  # also time forward + backward (PyTorch)
    per_layer: bool = False
    top: int = 15  # per-layer rows shown
    autobatch: bool = False
    fraction: float = 0.8  # of free CUDA memory, for autobatch
    cwd: Path | None = None  # where to look for runs/**/weights/best.pt; None: the working folder
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into


@dataclass
class Source:
    kind: str  # "checkpoint" | "onnx" | "zoo"
    ref: str  # the path, or the model name
    reason: str  # why this is what gets profiled
    kind_label: str | None = None  # what the file is, when not what `kind` says (e.g. a foreign .pt)


def check_config(c: ProfileConfig) -> None:
    """Refuse out-of-range options before anything is loaded."""

    def integer(name: str, value: object, low: int, high: int | None = None) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            limit = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"{name} must be an integer {limit}, got {value!r}")

    integer("--batch-size", c.batch_size, 1, MAX_BATCH)
    for b in c.batch_sizes:
        integer("--batch-sizes", b, 1, MAX_BATCH)
    integer("--warmup", c.warmup, 0)
    integer("--runs", c.runs, 1)
    integer("--top", c.top, 1)
    if c.threads is not None:
        integer("--threads", c.threads, 1, 1024)
    if not (isinstance(c.fraction, float | int) and 0 < c.fraction <= 1):
        raise ConfigError(f"--fraction must be in (0, 1], got {c.fraction!r}")


def parse_batch_sizes(text: str) -> list[int]:
    """ "1,8,32" -> [1, 8, 32] (duplicates dropped, order kept)."""
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_BATCH:
            raise ConfigError(
                f"--batch-sizes must be comma-separated integers in [1, {MAX_BATCH}], got {text!r}"
            )
        if int(part) not in sizes:
            sizes.append(int(part))
    return sizes


def resolve_source(arg: str | None, cwd: Path) -> Source:
    """What to profile, and the sentence that says why."""
    if arg is None:
        found = newest_best(cwd)
        if found is not None:
            reason = f"no model given: the newest runs/**/weights/best.pt in {cwd}"
            return Source("checkpoint", str(found), reason)
        return Source(
            "zoo",
            DEFAULT_MODEL,
            f"no model given and no runs/**/weights/best.pt in {cwd}: the default zoo model, "
            f"random weights, {ZOO_CLASSES} classes",
        )
    path = Path(arg)
    if path.is_dir():
        raise CheckpointError(f"{arg} is a directory; expected a .pt checkpoint, .onnx file or model name")
    from optkit.formats import model_format

    if model_format(path) == "onnx":  # by content: a checkpoint renamed .onnx is still one
        return Source("onnx", arg, "named on the command line")
    if path.exists() or path.suffix or "/" in arg or os.sep in arg:
        return Source("checkpoint", arg, "named on the command line")
    from optkit.models import get_spec, list_models

    try:
        get_spec(arg)
    except ModelError:
        raise ModelError(
            f"{arg!r} is not a file and not a known model; known models: {', '.join(list_models())}"
        ) from None
    return Source("zoo", arg, f"named on the command line; random weights, {ZOO_CLASSES} classes")


def newest_best(cwd: Path) -> Path | None:
    """The most recently modified runs/**/weights/best.pt under `cwd` (relative to it), or None."""
    found = [p for p in cwd.glob("runs/**/weights/best.pt") if p.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return newest.relative_to(cwd) if newest.is_relative_to(cwd) else newest


def open_target(source: Source, config: ProfileConfig):
    """The backend object that measures `source`, plus facts about it: (target, arch, classes, imgsz)."""
    if source.kind == "onnx":
        from optkit.measure.profile_onnx import OnnxTarget

        target = OnnxTarget(source.ref, config.device, config.threads)
        return target, target.arch, target.num_classes, None
    from optkit.device import select_device
    from optkit.measure.profile_torch import TorchTarget

    device = select_device(config.device)
    if source.kind == "checkpoint":
        from optkit.workflows.inputs import open_model

        src = open_model(
            source.ref,
            command="profile",
            trust=config.trust,
            code_dir=config.code_dir,
            model_name=config.model_name,
        )
        model, arch, classes, imgsz = src.model(), src.arch, src.num_classes or None, src.imgsz
        scripted = src.kind == "torchscript"
        target = TorchTarget(model, device, config.threads, fold_bn=not scripted, hooks=not scripted)
        target.notes.extend(src.notes)
        if src.kind != "optkit":
            source.kind_label = {
                "foreign": "foreign checkpoint, --trust",
                "state_dict": f"state_dict in {src.arch}",
                "torchscript": "TorchScript",
            }[src.kind]
        return target, arch, classes, imgsz
    else:
        from optkit.models import create_model, get_spec

        model = create_model(source.ref, num_classes=ZOO_CLASSES)
        arch, classes, imgsz = source.ref, ZOO_CLASSES, get_spec(source.ref).default_imgsz
    return TorchTarget(model, device, config.threads), arch, classes, imgsz


def profile(config: ProfileConfig, progress=None) -> dict:
    """Measure one model. `progress`: an optkit.report.progress display (default: quiet) that shows
    each measurement as a step (one per batch size of the sweep)."""
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    check_config(config)
    source = resolve_source(config.source, Path(config.cwd or Path.cwd()))
    target, arch, num_classes, default_imgsz = open_target(source, config)
    imgsz = _resolve_imgsz(target, config.imgsz, default_imgsz)
    batch = config.batch_size
    sweep_sizes = list(config.batch_sizes)
    if hasattr(target, "check_batches"):
        target.check_batches([batch, *sweep_sizes])
    notes: list[str] = []  # the profile's own; the target's (fuse, FLOPs) are added at the end

    progress.line(
        f"profiling {source.ref} at {imgsz} px, batch {batch} ({target.backend}, {target.device_label})"
    )
    with progress.step("counting params and FLOPs"):
        counts = target.counts(imgsz, batch)
    gflops, check = counts["gflops"], counts["gflops_check"]
    note = flops_note(gflops, check, counts["gflops_counter"])
    per_image = gflops / batch if gflops is not None else None

    with progress.step(f"timing {config.warmup} warm-up + {config.runs} runs"):
        timing, memory = target.run(imgsz, batch, config.warmup, config.runs)
    timing["gflops_per_s"] = _achieved(gflops, timing["median_ms"])

    backward = None
    if config.backward:
        if target.backend == "pytorch":
            with progress.step("timing forward + backward"):
                backward = target.run_backward(imgsz, batch, config.warmup, config.runs)
        else:
            notes.append("--backward needs a PyTorch model; an ONNX Runtime session only runs forward")

    per_layer = None
    if config.per_layer:
        with progress.step("timing per layer"):
            total_ms, layers = target.per_layer(
                imgsz, batch, config.warmup, config.runs, counts["layer_gflops"]
            )
        from optkit.measure.per_layer import breakdown

        per_layer = breakdown(layers, total_ms, config.top)

    sweep = None
    if sweep_sizes:
        sweep = []
        for i, b in enumerate(sweep_sizes, 1):
            if b == batch:  # measured above
                row_timing, row_memory = timing, memory
            else:
                with progress.step(f"sweep {i}/{len(sweep_sizes)}: batch {b}, timing {config.runs} runs"):
                    row_timing, row_memory = target.run(imgsz, b, config.warmup, config.runs)
            sweep.append(_sweep_row(b, row_timing, row_memory, per_image))

    auto, auto_note = None, None
    if config.autobatch:
        with progress.step("autobatch: the batch that fills the free CUDA memory"):
            auto, auto_note = target.autobatch(imgsz, config.fraction)

    return {
        "optkit_version": __version__,
        "source": source.ref,
        "source_kind": source.kind,
        "source_format": source.kind_label,
        "source_reason": source.reason,
        "arch": arch,
        "backend": target.backend,
        "device": target.device_label,
        "threads": target.used_threads(),
        "num_classes": num_classes,
        "imgsz": imgsz,
        "batch_size": batch,
        "input_shape": target.input_shape(imgsz, batch),
        "bn_folded": target.bn_folded,
        "params": counts["params"],
        "params_unfused": counts["params_unfused"],
        "gflops": gflops,
        "gflops_counter": counts["gflops_counter"],
        "gflops_check": check,
        "gflops_unfused": counts["gflops_unfused"],
        "flops_note": note,
        "latency": timing,
        "backward": backward,
        "memory": {"method": target.memory_method(), **memory},
        "per_layer": per_layer,
        "sweep": sweep,
        "autobatch": auto,
        "autobatch_note": auto_note,
        "notes": [*target.notes, *notes],
    }


def _resolve_imgsz(target, imgsz: int | None, default: int | None) -> int:
    if hasattr(target, "resolve_imgsz"):
        return target.resolve_imgsz(imgsz)
    from optkit.models.imgsz import check_imgsz

    return check_imgsz(imgsz if imgsz is not None else default, target.stride)


def flops_note(gflops: float | None, check: float | None, counter: str) -> str | None:
    if counter != "ultralytics-thop":
        return None
    if gflops is None and check is None:
        return "FLOPs unavailable: neither ultralytics-thop nor FlopCounterMode could count this model"
    if gflops is None:
        return f"ultralytics-thop could not count this model; FlopCounterMode counts {check:.4g} GFLOPs"
    if check is None:
        return "torch FlopCounterMode could not count this model (cross-check unavailable)"
    diff = abs(gflops - check) / max(gflops, check)
    if diff > FLOPS_TOLERANCE:
        return (
            f"ultralytics-thop counts {gflops:.4g} GFLOPs, torch FlopCounterMode {check:.4g} "
            f"({diff:.1%} apart; thop also counts norms and pools, FlopCounterMode functional matmuls)"
        )
    return None


def _achieved(gflops: float | None, median_ms: float) -> float | None:
    """GFLOP/s actually reached: FLOPs of one pass of the batch / median seconds per pass."""
    if gflops is None or not median_ms > 0:
        return None
    return gflops / (median_ms / 1e3)  # ms to s


def _sweep_row(batch: int, timing: dict, memory: dict, gflops_per_image: float | None) -> dict:
    return {
        "batch_size": batch,
        "median_ms": timing["median_ms"],
        "p90_ms": timing["p90_ms"],
        "img_per_s": timing["img_per_s"],
        "gflops_per_s": _achieved(
            gflops_per_image * batch if gflops_per_image is not None else None, timing["median_ms"]
        ),
        **memory,
    }
