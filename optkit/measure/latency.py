"""Eager PyTorch latency: milliseconds per forward (or forward + backward) pass, after warm-up, device
synchronised. `time_calls` and `latency_stats` are the backend-neutral parts (ONNX Runtime uses them too)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from optkit.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


def time_calls(
    step: Callable[[], object], warmup: int, runs: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Call `step` `warmup` times untimed, then `runs` times timed; return ms per call, in call order.

    `sync` (e.g. torch.cuda.synchronize) runs before the clock is read, so asynchronous work is counted.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []  # ms per call
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)  # s to ms
    return times


def latency_stats(times_ms: list[float], batch: int) -> dict:
    """Median, p90 (nearest rank), min and mean ms of a list of timings, and images/s at the median."""
    times = sorted(times_ms)
    median = statistics.median(times)
    return {
        "median_ms": median,
        "p90_ms": times[math.ceil(0.9 * len(times)) - 1],  # nearest-rank percentile
        "min_ms": times[0],
        "mean_ms": statistics.fmean(times),
        "img_per_s": batch / (median / 1e3) if median > 0 else None,  # images per second at the median
    }


def check_counts(batch: int, warmup: int, runs: int, threads: int | None = None) -> None:
    for name, value, low in (("batch", batch, 1), ("warmup", warmup, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")


def measure_latency(
    model: nn.Module,
    imgsz: int,
    batch: int = 1,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = None,
    *,
    backward: bool = False,
) -> dict:
    """Time `runs` passes of a `batch` x 3 x imgsz x imgsz input.

    Forward passes run under inference_mode. With `backward=True` each timed step is a forward pass plus
    the backward pass of sum(output) with respect to the parameters (gradients are discarded). Both run in
    eval mode: BatchNorm uses its running statistics and dropout is off, so the model is not changed.
    The model runs on the device (and dtype) of its parameters; its training flag, its gradients and the
    torch thread count (set to `threads` for the measurement when given) are restored afterwards.
    Returns {"median_ms", "p90_ms", "min_ms", "mean_ms", "img_per_s", "runs", "warmup", "batch",
    "threads"}: ms per pass of the whole batch; threads is None on CUDA.
    """
    import torch

    check_counts(batch, warmup, runs, threads)
    x, sync = random_input(model, batch, imgsz)

    def forward_backward() -> None:  # a model may return a tuple/list of tensors (a detection head)
        sum(t.float().sum() for t in _tensors(model(x)) if t.requires_grad).backward()

    was_training, prev_threads = model.training, torch.get_num_threads()
    grads = {name: q.grad for name, q in model.named_parameters()}
    try:
        model.eval()
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        if backward:
            with torch.enable_grad():
                times = time_calls(forward_backward, warmup, runs, sync)
        else:
            with torch.inference_mode():
                times = time_calls(lambda: model(x), warmup, runs, sync)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
        if backward:
            for name, q in model.named_parameters():
                q.grad = grads.get(name)

    return {
        **latency_stats(times, batch),
        "runs": runs,
        "warmup": warmup,
        "batch": batch,
        "threads": used_threads if x.device.type == "cpu" else None,
    }


def _tensors(output: object) -> list:
    """The tensors in a model's output: a tensor, or nested tuples/lists of them."""
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return [output] if hasattr(output, "backward") else []


# --- several models on a machine whose load changes: interleaved rounds, paired ratios -------------

BatchTimer = Callable[[int, int], list[float]]  # (untimed runs, timed runs) -> ms per timed run


def time_interleaved(
    timers: Sequence[BatchTimer],
    rounds: int,
    runs: int,
    warmup: int = 0,
    round_warmup: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> list[list[list[float]]]:
    """Time several models so that load which comes and goes lands on all of them alike.

    Each model is warmed up once (`warmup` untimed runs, in the given order); then every one of `rounds`
    rounds times each model's batch of `runs` runs, after min(`round_warmup`, `warmup`) untimed runs that
    let the previous model's threads settle and bring this one's weights back into cache. The order turns
    by one each round, so no model always follows the same one. Returns times[model][round] = ms per run.
    `on_round(r)` is called after the warm-up (r = 0) and after each round r = 1..rounds (progress).
    """
    round_warmup = min(round_warmup, warmup)
    for timer in timers:
        timer(warmup, 0)
    report = on_round or (lambda r: None)
    report(0)
    times: list[list[list[float]]] = [[] for _ in timers]
    for r in range(rounds):
        for k in range(len(timers)):
            i = (r + k) % len(timers)  # round r starts with model r (mod n)
            times[i].append(timers[i](round_warmup, runs))
        report(r + 1)
    return times


def speedup_stats(base_round_ms: list[float], round_ms: list[float]) -> dict:
    """Speed-up of a model over a base model timed in the same rounds: the median of the per-round ratios
    base / model (each round's pair saw the same load), their quartiles, range, and spread.

    `speedup_spread` is the interquartile range of the ratios over their median (0.1: the middle half of
    the rounds disagree by 10%); None with a single round, which has no spread to judge."""
    ratios = [b / m for b, m in zip(base_round_ms, round_ms, strict=True)]
    median = statistics.median(ratios)
    if len(ratios) > 1:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        spread = (q3 - q1) / median
    else:
        q1 = q3 = median
        spread = None
    return {
        "speedup": median,
        "speedup_q1": q1,
        "speedup_q3": q3,
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "speedup_spread": spread,
        "round_speedups": ratios,
    }


def random_input(model: nn.Module, batch: int, imgsz: int):
    """(a random batch x 3 x imgsz x imgsz input on the model's device and dtype, a `sync()` that waits
    for the device's queued work: CUDA runs asynchronously, so the clock is read after it)."""
    import torch

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.randn(batch, 3, imgsz, imgsz, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return x, sync


def torch_batch_timer(model: nn.Module, imgsz: int, batch: int = 1, threads: int | None = None) -> BatchTimer:
    """A BatchTimer for eager forward passes of one random batch x 3 x imgsz x imgsz input (made once, on
    the model's device and dtype). Each call sets eval mode, inference_mode and `threads` and restores the
    training flag and torch's thread count afterwards, so several models can take turns."""
    import torch

    check_counts(batch, 0, 1, threads)
    x, sync = random_input(model, batch, imgsz)

    def timer(warmup: int, runs: int) -> list[float]:
        was_training, prev_threads = model.training, torch.get_num_threads()
        try:
            model.eval()
            if threads is not None:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                return time_calls(lambda: model(x), warmup, runs, sync)
        finally:
            torch.set_num_threads(prev_threads)
            model.train(was_training)

    return timer
