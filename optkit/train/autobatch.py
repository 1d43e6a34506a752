"""Batch size from GPU memory: measure a few batches, fit memory = a + b*batch, fill a fraction."""

from __future__ import annotations

import logging

log = logging.getLogger("optkit")

FALLBACK_BATCH = 64
PROBE_BATCHES = (1, 2, 4, 8, 16)


def autobatch(
    model, imgsz: int, device, fraction: float = 0.6, fallback: int = FALLBACK_BATCH
) -> tuple[int, str]:
    """Return (batch size, a sentence saying how it was chosen)."""
    if device.type != "cuda":
        return fallback, f"autobatch needs CUDA; on {device.type} using --batch-size {fallback}"
    import torch

    free, total = torch.cuda.mem_get_info(device)  # bytes
    used = []
    for b in PROBE_BATCHES:
        used.append(_peak_bytes(model, b, imgsz, device))
    slope, intercept = _fit_line(PROBE_BATCHES, used)
    if slope <= 0:
        return fallback, f"autobatch could not fit memory use; using --batch-size {fallback}"
    batch = int((free * fraction - intercept) / slope)
    batch = max(1, min(batch, 1024))
    gib = 1 << 30
    return batch, (
        f"autobatch: {batch} images fill {fraction:.0%} of {free / gib:.1f} GiB free "
        f"({total / gib:.1f} GiB total, {slope / (1 << 20):.1f} MiB per image)"
    )


def _peak_bytes(model, batch: int, imgsz: int, device) -> int:
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.randn(batch, 3, imgsz, imgsz, device=device)
    with torch.autocast("cuda"):
        y = model(x)
    y.float().sum().backward()
    model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device) - base
    del x, y
    return peak


def _fit_line(xs, ys) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return slope, my - slope * mx
