"""Eager PyTorch latency: milliseconds per forward pass, after warm-up, device synchronised."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING

from optkit.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


def measure_latency(
    model: nn.Module,
    imgsz: int,
    batch: int = 1,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = None,
) -> dict:
    """Time `runs` forward passes of a `batch` x 3 x imgsz x imgsz input under inference_mode.

    The model runs in eval mode on the device (and dtype) of its parameters; its training flag and the
    torch thread count (set to `threads` for the measurement when given) are restored afterwards.
    Returns {"median_ms", "p90_ms", "min_ms", "runs", "batch", "threads"}: ms per forward pass of the batch.
    """
    import torch

    for name, value, low in (("batch", batch, 1), ("warmup", warmup, 0), ("runs", runs, 1)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.randn(batch, 3, imgsz, imgsz, device=device, dtype=dtype)

    def sync() -> None:  # CUDA runs asynchronously: wait for the work before reading the clock
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training, prev_threads = model.training, torch.get_num_threads()
    times = []  # ms per forward
    try:
        model.eval()
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            sync()
            for _ in range(runs):
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)  # s to ms
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)

    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[math.ceil(0.9 * len(times)) - 1],  # nearest-rank percentile
        "min_ms": times[0],
        "runs": runs,
        "batch": batch,
        "threads": used_threads if device.type == "cpu" else None,
    }
