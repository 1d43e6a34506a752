"""Memory a model needs while it runs: CUDA peak allocation, CPU resident-set growth, activation sizes.

- CUDA: `torch.cuda.max_memory_allocated` over a block (peak statistics reset at its start): weights,
  inputs, activations and workspace held by PyTorch's caching allocator, in bytes. Exact for tensors,
  blind to memory outside PyTorch's allocator (cuDNN handles, the CUDA context).
- CPU: the process's resident set size (RSS), sampled every ~1 ms from /proc/self/statm by a background
  thread during the block; the figure is the peak minus the RSS just before the block, i.e. what running
  the model added on top of what was already resident (weights are, freshly allocated working memory and
  allocator / ONNX Runtime arena growth are not). Free C-heap memory is handed back to the OS (glibc
  `malloc_trim`) before the baseline is read. A lower bound: a peak shorter than the sampling interval can
  be missed, and memory an allocator or arena still holds from an earlier run (a smaller batch of the same
  sweep, ONNX Runtime's arena) is already in the baseline. Without
  /proc (macOS) the growth of `resource.getrusage` ru_maxrss over the block is used instead, which only
  sees peaks above the process's earlier high-water mark.
- Activations: the bytes of the tensors that leaf modules output in one forward pass (forward hooks),
  not counting outputs that share storage with the module's input (in-place activations, views such as
  Flatten / Identity). Functional operations inside a parent's forward (torch.cat, residual additions)
  are not seen. A size, not a peak: PyTorch frees most activations before the pass ends.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

_STATM = "/proc/self/statm"
SAMPLE_INTERVAL_S = 0.001  # RSS sampling period


def rss_method(extra: str = "") -> str:
    """One line that says how `RssPeak` measures on this machine; `extra` is appended to what it covers."""
    where = f"over the warm-up and timed runs{extra}"
    if os.path.exists(_STATM):
        return f"CPU: peak RSS growth {where}, sampled every 1 ms (/proc/self/statm)"
    return f"CPU: growth of the process's peak RSS (getrusage ru_maxrss) {where}"


class RssPeak:
    """Context manager: `growth_bytes` = peak RSS during the block minus RSS at its start (None if
    this platform cannot say)."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.growth_bytes: int | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None
        self._base_maxrss: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096  # bytes per page

    def _rss(self) -> int | None:
        try:
            with open(_STATM, "rb") as f:
                return int(f.read().split()[1]) * self._page  # resident pages to bytes
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._rss()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __enter__(self) -> RssPeak:
        _trim_heap()
        self._base = self._rss()
        if self._base is not None:
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, name="optkit-rss", daemon=True)
            self._thread.start()
        else:
            self._base_maxrss = _maxrss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            last = self._rss()
            peak = max(self._peak, last or 0)
            self.growth_bytes = max(0, peak - self._base)
        elif self._base_maxrss is not None:
            after = _maxrss_bytes()
            self.growth_bytes = None if after is None else max(0, after - self._base_maxrss)


def _trim_heap() -> None:
    """Return the C heap's free memory to the OS (glibc `malloc_trim`), so that memory freed by earlier
    work (e.g. the FLOP-counting passes) is not already resident and hidden in the baseline."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        pass


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS: bytes; Linux/BSD: KiB


class CudaPeak:
    """Context manager: `peak_bytes` = torch.cuda.max_memory_allocated(device) over the block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> CudaPeak:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int | None:
    """Bytes of the new tensors leaf modules output in one forward pass of `x` (see the module doc)."""
    import torch

    total = 0

    def hook(module, inputs, output) -> None:
        nonlocal total
        held = {t.untyped_storage().data_ptr() for t in _tensors(inputs)}
        for t in _tensors(output):
            if t.untyped_storage().data_ptr() not in held:
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total if leaves else None


def _tensors(obj: object) -> list:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []
