"""The `optkit benchmark` flow: measure several artifacts (.pt and .onnx) the same way, one row each.

Every artifact runs at the same input size (--imgsz, else the first artifact's) and batch, with the
same warm-up and timed runs; speed-up is relative to the first artifact's median latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optkit.errors import ConfigError

MAX_ARTIFACTS = 64


@dataclass
class BenchmarkRequest:
    artifacts: list[str]
    data: str | None = None
    imgsz: int | None = None
    batch: int = 1
    warmup: int = 10
    runs: int = 50
    threads: int | None = None

    def validate(self) -> BenchmarkRequest:
        if not 1 <= len(self.artifacts) <= MAX_ARTIFACTS:
            raise ConfigError(f"give 1 to {MAX_ARTIFACTS} artifacts (.pt or .onnx)")
        if not 1 <= self.batch <= 1024:
            raise ConfigError(f"--batch-size must be in [1, 1024], got {self.batch}")
        if not 1 <= self.runs <= 100_000 or not 0 <= self.warmup <= 100_000:
            raise ConfigError("--runs must be >= 1 and --warmup >= 0")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
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


def run_benchmark(req: BenchmarkRequest) -> dict:
    from optkit.models.imgsz import check_imgsz

    req.validate()
    loaded = [_load(path, req.threads) for path in req.artifacts]  # every file is checked before any timing
    imgsz = check_imgsz(req.imgsz or loaded[0].imgsz)
    spec = _dataset(req.data, loaded)
    rows = [_measure(item, imgsz, spec, req) for item in loaded]
    base = rows[0]["latency_ms"]
    for row in rows:
        row["speedup"] = base / row["latency_ms"]
    return {
        "imgsz": imgsz,
        "batch": req.batch,
        "data": req.data,
        "warmup": req.warmup,
        "runs": req.runs,
        "threads": req.threads,
        "rows": rows,
    }


def _load(path: str, threads: int | None) -> Loaded:
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, threads)
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.measure.flops import count_flops
    from optkit.models import count_params
    from optkit.quant.quantizers import quantize_entry

    ckpt = load_checkpoint(path, reader="benchmark")
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
    )


def inference_form(model):
    """A copy with BatchNorm folded (what ONNX Runtime runs), so that a .pt and its .onnx count alike."""
    from optkit.stages.fuse import FuseConfig, fuse

    return fuse(model, FuseConfig(check=False))[0]


def _load_onnx(path: Path, threads: int | None) -> Loaded:
    from optkit.measure.onnx_flops import count_graph
    from optkit.onnxrt import load_onnx, load_optkit_onnx

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
    )


def _dataset(data: str | None, loaded: list[Loaded]):
    if not data:
        return None
    from optkit.data import resolve_data
    from optkit.measure.validate import check_classes

    spec = resolve_data(data)
    for item in loaded:
        check_classes(spec, item.names)
    return spec


def _measure(item: Loaded, imgsz: int, spec, req: BenchmarkRequest) -> dict:
    from optkit.measure.latency import measure_latency
    from optkit.measure.validate import accuracy_on

    if item.format.startswith("onnx"):
        latency = _onnx_latency(item.model, imgsz, req)
    else:
        latency = measure_latency(
            item.model, imgsz, batch=req.batch, warmup=req.warmup, runs=req.runs, threads=req.threads
        )
    row = {
        "path": str(item.path),
        "format": item.format,
        "file_bytes": item.path.stat().st_size,
        "params": item.params,
        "gflops": item.count_gflops(imgsz),
        "latency_ms": latency["median_ms"],
        "p90_ms": latency["p90_ms"],
        "top1": None,
        "top5": None,
    }
    if spec is not None:
        acc = accuracy_on(item.model, item.names, spec, imgsz)
        row.update(top1=acc["top1"], top5=acc["top5"])
    return row


def _onnx_latency(model, imgsz: int, req: BenchmarkRequest) -> dict:
    """`InferenceSession.run` on one fixed numpy batch: ms per run (threads were set on the session)."""
    import numpy as np

    from optkit.measure.latency import latency_stats, time_calls

    if model.fixed_batch is not None and model.fixed_batch != req.batch:
        raise ConfigError(
            f"{model.path} was exported with a fixed batch of {model.fixed_batch}; use --batch-size "
            f"{model.fixed_batch} or export with --dynamic"
        )
    model.check_input_size(imgsz)
    x = np.random.default_rng(0).standard_normal((req.batch, 3, imgsz, imgsz)).astype(model.input_dtype)
    feed = {model.input_name: x}
    times = time_calls(lambda: model.session.run([model.output_name], feed), req.warmup, req.runs)
    return latency_stats(times, req.batch)
