"""Where a forward pass spends its time: per leaf module (PyTorch) or per graph node (ONNX Runtime).

PyTorch: forward pre-hooks and hooks on every leaf module (one without children) read the clock around
each call (CUDA synchronised in the hooks, so each interval holds that module's kernels); a module's time
is the sum over its calls in one pass, averaged over the timed passes. ONNX Runtime: its own profiler
(`SessionOptions.enable_profiling`) writes a Chrome-trace JSON with one `<node>_kernel_time` event per
node execution and one `model_run` event per run; the warm-up runs are dropped by their position.

Shares are fractions of the mean time of a whole pass measured in the same runs; time spent outside any
leaf module or node (functional ops such as torch.cat and residual additions, Python and framework
overhead) is reported as `outside`, so the shown rows + `others` (layers beyond the top N) + `outside`
add up to 1. Means, not medians, because means add up. The hooks, and ONNX Runtime's profiler, cost a
few microseconds per layer and call; that time lands in `outside` and makes the profiled pass slower
than the plain latency, which matters only for tiny models (for ResNet-18 at 224 px it is well under 1%).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class LayerTime:
    name: str  # module name (PyTorch) or node name (ONNX Runtime, after its graph optimizations)
    kind: str  # module class or ONNX op type
    ms: float  # mean ms per forward pass, summed over the layer's calls in the pass
    calls: float  # calls per pass
    gflops: float | None = None  # GFLOPs of the layer per pass at the profiled batch; None: unknown


def breakdown(layers: list[LayerTime], total_ms: float, top: int) -> dict:
    """The per-layer section of a profile: the `top` slowest layers with their shares of the pass."""
    ranked = sorted(layers, key=lambda r: r.ms, reverse=True)
    attributed = sum(r.ms for r in ranked)
    whole = max(total_ms, attributed)  # hooks cannot sum to more than the pass; clock noise can
    share = (lambda ms: ms / whole) if whole > 0 else (lambda ms: 0.0)
    others = sum(r.ms for r in ranked[top:])
    outside = whole - attributed
    return {
        "total_ms": total_ms,
        "layers": len(ranked),
        "top": top,
        "rows": [
            {
                "name": r.name,
                "type": r.kind,
                "ms": r.ms,
                "share": share(r.ms),
                "calls": r.calls,
                "gflops": r.gflops,
            }
            for r in ranked[:top]
        ],
        "others_ms": others,
        "others_share": share(others),
        "outside_ms": outside,
        "outside_share": share(outside),
    }


def time_torch_layers(
    model: nn.Module, x: torch.Tensor, warmup: int, runs: int, sync: Callable[[], None]
) -> tuple[float, list[LayerTime]]:
    """(mean ms per pass, per-leaf-module LayerTime) over `runs` passes after `warmup` untimed ones."""
    import torch

    leaves = [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]
    started: dict[str, float] = {}
    spent = dict.fromkeys((n for n, _ in leaves), 0.0)  # seconds over the timed passes
    calls = dict.fromkeys(spent, 0)
    recording = False

    def before(name: str):
        def hook(module, inputs) -> None:
            sync()
            started[name] = time.perf_counter()

        return hook

    def after(name: str):
        def hook(module, inputs, output) -> None:
            sync()
            if recording:
                spent[name] += time.perf_counter() - started[name]
                calls[name] += 1

        return hook

    handles = []
    totals = []  # seconds per timed pass
    was_training = model.training
    try:
        for name, module in leaves:
            handles.append(module.register_forward_pre_hook(before(name)))
            handles.append(module.register_forward_hook(after(name)))
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            sync()
            recording = True
            for _ in range(runs):
                t0 = time.perf_counter()
                model(x)
                sync()
                totals.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers = [
        LayerTime(name, type(module).__name__, spent[name] / runs * 1e3, calls[name] / runs)  # s to ms
        for name, module in leaves
        if calls[name]
    ]
    return sum(totals) / runs * 1e3, layers


def ort_trace_layers(events: list[dict], skip_runs: int) -> tuple[float, list[LayerTime]]:
    """(mean ms per run, per-node LayerTime) from an ONNX Runtime profile, ignoring the first
    `skip_runs` runs (warm-up). Event times are in microseconds."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[skip_runs:]
    if not runs:
        return 0.0, []
    starts = [e["ts"] for e in runs]
    spent: dict[str, float] = {}  # microseconds over the kept runs
    count: dict[str, int] = {}
    kinds: dict[str, str] = {}
    suffix = "_kernel_time"
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith(suffix):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1  # the run that started last before this event
        if i < 0 or e["ts"] > runs[i]["ts"] + runs[i]["dur"]:
            continue  # a warm-up run's node
        node = name[: -len(suffix)]
        spent[node] = spent.get(node, 0.0) + e.get("dur", 0)
        count[node] = count.get(node, 0) + 1
        kinds[node] = e.get("args", {}).get("op_name", "?")
    n = len(runs)
    us_to_ms = 1e-3
    layers = [LayerTime(node, kinds[node], spent[node] / n * us_to_ms, count[node] / n) for node in spent]
    return sum(e["dur"] for e in runs) / n * us_to_ms, layers
