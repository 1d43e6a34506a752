"""The `optkit profile` flow: what to profile, open it, measure it (optkit.measure.profile), one dict
(the schema is in optkit.report.profile).

Sources: an optkit .pt checkpoint or another model file `open_model` reads (PyTorch), an .onnx file (ONNX
Runtime; told by content, not name) or a zoo model name (random weights, 1000 classes). With no source,
the newest `runs/**/weights/best.pt` under the working folder is profiled, else the default zoo model; the
result says which and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from optkit import __version__, limits
from optkit.errors import CheckpointError, ConfigError, DeviceError, ModelError

DEFAULT_MODEL = "yolo-cls-n"
ZOO_CLASSES = 1000  # zoo models are profiled with an ImageNet-sized head
# what a .pt file is, when not an optkit checkpoint (workflows.inputs.ModelInput.kind -> source_format)
FILE_KINDS = {
    "foreign": "foreign checkpoint, --trust",
    "state_dict": "state_dict in {arch}",
    "torchscript": "TorchScript",
}
BACKWARD_NOTE = "--backward needs a PyTorch model; an ONNX Runtime session only runs forward"
PER_LAYER_REFUSAL = "--per-layer needs forward hooks, which a TorchScript module does not run"


@dataclass
class ProfileRequest:
    source: str | None = None  # .pt / .onnx path or zoo model name; None: newest runs/**/best.pt or default
    imgsz: int | None = None  # pixels; None: the source's own (checkpoint, zoo default, ONNX graph/metadata)
    batch_size: int = 1  # images per pass for counts, latency, memory and per-layer time
    batch_sizes: list[int] = field(default_factory=list)  # sweep; empty: no sweep
    warmup: int = 10  # untimed passes before each timed loop
    runs: int = 50  # timed passes
    threads: int | None = (
        None  # intra-op threads (torch / ONNX Runtime / OpenVINO); None: the backend's default
    )
    precision: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT; None: the CPU's default
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

    def __post_init__(self) -> None:
        """Refuse out-of-range options before anything is loaded, on the CLI's bounds (optkit.limits)."""
        limits.TIMED_BATCH.check("--batch-size", self.batch_size)  # refused before anything is allocated
        for b in self.batch_sizes:
            limits.TIMED_BATCH.check("--batch-sizes", b)
        limits.WARMUP.check("--warmup", self.warmup)
        limits.RUNS.check("--runs", self.runs)
        limits.TOP.check("--top", self.top)
        if self.threads is not None:
            limits.THREADS.check("--threads", self.threads)
        if self.precision is not None:
            from optkit.ovrt import PRECISIONS

            if self.precision not in PRECISIONS:
                raise ConfigError(
                    f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
                )
        number = isinstance(self.fraction, float | int) and not isinstance(self.fraction, bool)
        if not (number and 0 < self.fraction <= 1):
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction!r}")


def parse_batch_sizes(text: str) -> list[int]:
    """ "1,8,32" -> [1, 8, 32] (duplicates dropped, order kept)."""
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in limits.TIMED_BATCH:
            high = limits.TIMED_BATCH.high
            raise ConfigError(f"--batch-sizes must be comma-separated integers in [1, {high}], got {text!r}")
        if int(part) not in sizes:
            sizes.append(int(part))
    return sizes


@dataclass
class Source:
    kind: str  # "checkpoint" | "onnx" | "openvino" | "zoo"
    ref: str  # the path, or the model name
    reason: str  # why this is what gets profiled
    kind_label: str | None = None  # what the file is, when not what `kind` says (e.g. a foreign .pt)


def run_profile(req: ProfileRequest, progress=None) -> dict:
    """Profile one model. `progress`: an optkit.report.progress display (default: quiet) that shows
    each measurement as a step (one per batch size of the sweep)."""
    from optkit.measure.profile import ProfilePlan, profile_target
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    source = resolve_source(req.source, Path(req.cwd or Path.cwd()))
    target, arch, num_classes, default_imgsz = open_target(source, req)
    imgsz = _imgsz(target, source.ref, req.imgsz, default_imgsz)
    if hasattr(target, "check_batches"):
        target.check_batches([req.batch_size, *req.batch_sizes])
    if req.per_layer and not target.supports_per_layer:
        raise ConfigError(PER_LAYER_REFUSAL)
    backend = f"{target.backend}, {target.device_label}"
    progress.line(f"profiling {source.ref} at {imgsz} px, batch {req.batch_size} ({backend})")
    plan = ProfilePlan(
        imgsz=imgsz,
        batch_size=req.batch_size,
        batch_sizes=list(req.batch_sizes),
        warmup=req.warmup,
        runs=req.runs,
        backward=req.backward,
        per_layer=req.per_layer,
        top=req.top,
        autobatch=req.autobatch,
        fraction=req.fraction,
    )
    measured = profile_target(target, plan, progress)
    if req.backward and not target.supports_backward:
        measured["notes"].append(BACKWARD_NOTE)
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
        "batch_size": req.batch_size,
        "input_shape": target.input_shape(imgsz, req.batch_size),
        "bn_folded": target.bn_folded,
        **measured,
    }


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
    from optkit.ovrt import is_ir

    if is_ir(path):
        return Source("openvino", arg, "named on the command line")
    if path.is_dir():
        raise CheckpointError(
            f"{arg} is a directory with no OpenVINO .xml; expected a .pt checkpoint, .onnx file, OpenVINO "
            "IR or model name"
        )
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


def open_target(source: Source, req: ProfileRequest):
    """The backend object that measures `source`, plus facts about it: (target, arch, classes, imgsz),
    imgsz the source's own input side (None: the target's default)."""
    if req.precision is not None and source.kind != "openvino":
        raise ConfigError(
            "--precision sets OpenVINO's inference precision; it applies to an OpenVINO IR only"
        )
    if source.kind == "onnx":
        target = open_onnx_target(source.ref, req.device, req.threads)
        return target, target.arch, target.num_classes, target.default_imgsz
    if source.kind == "openvino":
        from optkit.measure.profile_openvino import OpenVinoTarget

        _cpu_only(req.device, "OpenVINO")
        target = OpenVinoTarget(source.ref, req.threads, req.precision)
        return target, target.arch, target.num_classes, target.default_imgsz
    from optkit.device import select_device
    from optkit.measure.profile_torch import TorchTarget

    device = select_device(req.device)
    if source.kind == "zoo":
        from optkit.models import create_model, get_spec

        target = TorchTarget(create_model(source.ref, num_classes=ZOO_CLASSES), device, req.threads)
        return target, source.ref, ZOO_CLASSES, get_spec(source.ref).default_imgsz
    from optkit.workflows.inputs import open_model

    src = open_model(
        source.ref, command="profile", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    scripted = src.kind == "torchscript"
    target = TorchTarget(src.model(), device, req.threads, fold_bn=not scripted, hooks=not scripted)
    target.notes.extend(src.notes)
    if src.kind != "optkit":
        source.kind_label = FILE_KINDS[src.kind].format(arch=src.arch)
    return target, src.arch, src.num_classes or None, src.imgsz


def _cpu_only(device: str, runtime: str) -> None:
    if (device or "").strip().lower() not in ("", "cpu", "auto"):
        raise DeviceError(f"--device {device}: optkit runs {runtime} on the CPU only")


def open_onnx_target(path: str | os.PathLike, device: str = "", threads: int | None = None):
    """An OnnxTarget on the file at `path`: its graph read, sessions opened on the providers `device`
    asks for (each with `threads` intra-op threads)."""
    from optkit.measure.profile_onnx import OnnxTarget

    proto = _read_onnx(path)
    providers = onnx_providers(device)

    def open_session(profile_prefix: str | None):
        return _session(path, providers, threads, profile_prefix)

    return OnnxTarget(proto, open_session, str(path), providers, threads)


def _read_onnx(path: str | os.PathLike):
    """The file's graph, without external weights (shapes suffice; ONNX Runtime reads the file)."""
    from optkit.onnxrt import OnnxFileError, load_onnx

    proto = load_onnx(path, check=False)
    if not proto.graph.node or not proto.graph.input:  # protobuf parses many byte strings as an empty model
        raise OnnxFileError(f"{path} is not a valid ONNX model (no graph)")
    return proto


def _session(path, providers: list[str], threads: int | None, profile_prefix: str | None = None):
    """An ONNX Runtime session of the file; with `profile_prefix`, its profiler writes a trace there."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings would go to stderr on every load
    if threads is not None:
        options.intra_op_num_threads = threads
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime's pybind errors share no base class
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"ONNX Runtime cannot load {path}: {first}") from None


def onnx_providers(device: str) -> list[str]:
    """CPU unless a CUDA device is asked for; a CUDA request without CUDA is an error, not a fallback."""
    spec = (device or "").strip().lower()
    if spec in ("", "cpu", "auto"):
        return ["CPUExecutionProvider"]
    from optkit.device import select_device

    select_device(spec)  # raises DeviceError where torch sees no CUDA
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            f"--device {device}: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _imgsz(target, ref: str, asked: int | None, default: int | None) -> int:
    """The input side to profile at: fixed by the graph, else --imgsz, else the source's own."""
    from optkit.models.imgsz import check_imgsz

    fixed = target.fixed_side()
    if fixed is not None:
        if asked is not None and asked != fixed:
            raise ModelError(f"--imgsz {asked}: {ref} takes {fixed}x{fixed} inputs only (fixed in the graph)")
        return fixed
    size = asked if asked is not None else default
    if size is None:
        raise ModelError(f"{ref} has a dynamic input size and no imgsz in its metadata; give --imgsz")
    return check_imgsz(size, target.stride, "--imgsz")
