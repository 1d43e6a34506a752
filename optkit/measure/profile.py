"""Profile a given model: params, FLOPs, latency, memory, per-layer time, a batch-size sweep and
autobatch, measured on a target (optkit.measure.profile_torch.TorchTarget for an nn.Module,
optkit.measure.profile_onnx.OnnxTarget for an ONNX Runtime session). Which model, and opening its file,
is the `optkit profile` flow's (optkit.workflows.profile); the result schema is in optkit.report.profile.

Params and FLOPs are counted on the inference form of the network, BatchNorm folded into the conv/linear
before it, for PyTorch and ONNX alike (see `optkit.measure.profile_torch` and `optkit.measure.onnx_flops`):
that is what makes a checkpoint, its fused checkpoint and its ONNX export report the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLOPS_TOLERANCE = 0.02  # thop and FlopCounterMode may differ by this fraction before both are shown


@dataclass
class ProfilePlan:
    """What to measure (values already checked by the caller)."""

    imgsz: int  # pixels, square input side
    batch_size: int = 1  # images per pass for counts, latency, memory and per-layer time
    batch_sizes: list[int] = field(default_factory=list)  # sweep; empty: no sweep
    warmup: int = 10  # untimed passes before each timed loop
    runs: int = 50  # timed passes
    backward: bool = False  # also time forward + backward (targets with supports_backward only)
    per_layer: bool = False
    top: int = 15  # per-layer rows kept
    autobatch: bool = False
    fraction: float = 0.8  # of free CUDA memory, for autobatch


def profile_target(target, plan: ProfilePlan, progress=None) -> dict:
    """Measure `target` as `plan` says; each measurement is a step of `progress` (an optkit.report.progress
    display; default quiet), one per batch size of the sweep. Returns the measured part of the profile:
    params..flops_note, latency, backward, memory, per_layer, sweep, autobatch, autobatch_note, notes."""
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    imgsz, batch = plan.imgsz, plan.batch_size
    with progress.step("counting params and FLOPs"):
        counts = target.counts(imgsz, batch)
    gflops, check = counts["gflops"], counts["gflops_check"]
    per_image = gflops / batch if gflops is not None else None

    with progress.step(f"timing {plan.warmup} warm-up + {plan.runs} runs"):
        timing, memory = target.run(imgsz, batch, plan.warmup, plan.runs)
    timing["gflops_per_s"] = _achieved(gflops, timing["median_ms"])

    backward = None
    if plan.backward and target.supports_backward:
        with progress.step("timing forward + backward"):
            backward = target.run_backward(imgsz, batch, plan.warmup, plan.runs)

    per_layer = None
    if plan.per_layer:
        with progress.step("timing per layer"):
            total_ms, layers = target.per_layer(imgsz, batch, plan.warmup, plan.runs, counts["layer_gflops"])
        from optkit.measure.per_layer import breakdown

        per_layer = breakdown(layers, total_ms, plan.top)

    sweep = _sweep(target, plan, timing, memory, per_image, progress) if plan.batch_sizes else None

    auto, auto_note = None, None
    if plan.autobatch:
        with progress.step("autobatch: the batch that fills the free CUDA memory"):
            auto, auto_note = target.autobatch(imgsz, plan.fraction)

    return {
        "params": counts["params"],
        "params_unfused": counts["params_unfused"],
        "gflops": gflops,
        "gflops_counter": counts["gflops_counter"],
        "gflops_check": check,
        "gflops_unfused": counts["gflops_unfused"],
        "flops_note": flops_note(gflops, check, counts["gflops_counter"]),
        "latency": timing,
        "backward": backward,
        "memory": {"method": target.memory_method(), **memory},
        "per_layer": per_layer,
        "sweep": sweep,
        "autobatch": auto,
        "autobatch_note": auto_note,
        "notes": list(target.notes),
    }


def _sweep(target, plan: ProfilePlan, timing: dict, memory: dict, per_image, progress) -> list[dict]:
    """One row per batch size; the profiled batch reuses the figures measured above."""
    rows = []
    for i, b in enumerate(plan.batch_sizes, 1):
        if b == plan.batch_size:
            row_timing, row_memory = timing, memory
        else:
            with progress.step(f"sweep {i}/{len(plan.batch_sizes)}: batch {b}, timing {plan.runs} runs"):
                row_timing, row_memory = target.run(plan.imgsz, b, plan.warmup, plan.runs)
        rows.append(_sweep_row(b, row_timing, row_memory, per_image))
    return rows


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
