"""The PyTorch side of `optkit profile`: counts, latency, memory and per-layer time of an nn.Module.

The model is profiled in inference form: a copy with every foldable BatchNorm folded into the conv /
linear before it (`optkit.stages.fuse`), which is what `optkit fuse`, the ONNX exporter and ONNX Runtime
run. So params and FLOPs equal those of the fused checkpoint and of the exported .onnx; the model's own
(unfused) figures are kept alongside as `params_unfused` / `gflops_unfused`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from optkit.measure.latency import measure_latency

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


class TorchTarget:
    backend = "pytorch"
    supports_backward = True

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        threads: int | None = None,
        fold_bn: bool = True,
        hooks: bool = True,
    ) -> None:
        """fold_bn: profile the BN-folded copy (False for a TorchScript module, which cannot be changed);
        hooks: forward hooks work on it (per-layer time, activation bytes; not on TorchScript)."""
        from optkit.stages.fuse import FuseConfig, fuse

        self.unfused = model.eval()
        self.device = device
        self.threads = threads
        from optkit.models.imgsz import model_stride

        self.stride = model_stride(model)
        self.notes: list[str] = []
        self.hooks = hooks
        try:
            if not fold_bn:
                raise _NotFolded
            fused, report = fuse(model, FuseConfig(check=False))
            self.bn_folded: int | None = len(report.fused)
        except _NotFolded:
            fused, self.bn_folded = model, None
        except Exception as e:  # profile what was given rather than fail; say so
            log.debug("fuse failed", exc_info=True)
            fused, self.bn_folded = model, None
            self.notes.append(f"BatchNorm not folded ({type(e).__name__}: {e}); profiled as built")
        self.model = fused.to(device).eval()

    @property
    def device_label(self) -> str:
        return str(self.device)

    def used_threads(self) -> int | None:
        import torch

        with self.thread_count():
            return torch.get_num_threads() if self.device.type == "cpu" else None

    @contextlib.contextmanager
    def thread_count(self) -> Iterator[None]:
        """torch's intra-op thread count set to `threads` inside the block, restored after it."""
        import torch

        before = torch.get_num_threads()
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            yield
        finally:
            torch.set_num_threads(before)

    @property
    def supports_per_layer(self) -> bool:
        return self.hooks  # per-layer time is measured with forward hooks

    def fixed_side(self) -> None:
        """A module takes any input side that is a multiple of its stride."""
        return None

    def input_shape(self, imgsz: int, batch: int) -> list[int]:
        return [batch, 3, imgsz, imgsz]

    def _input(self, imgsz: int, batch: int):
        import torch

        return torch.randn(batch, 3, imgsz, imgsz, device=self.device)

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def counts(self, imgsz: int, batch: int) -> dict:
        """Params and GFLOPs per forward pass of `batch` images, of the inference form and as built."""
        from optkit.measure.flops import count_flops, count_flops_by_layer, count_flops_check, count_params

        layered = count_flops_by_layer(self.model, imgsz, batch)
        gflops = layered[0] if layered else None
        return {
            "params": count_params(self.model),
            "params_unfused": count_params(self.unfused),
            "gflops": gflops,
            "gflops_counter": "ultralytics-thop",
            "gflops_check": count_flops_check(self.model, imgsz, batch),
            "gflops_unfused": count_flops(self.unfused, imgsz, batch) if self.bn_folded else gflops,
            "layer_gflops": layered[1] if layered else {},
        }

    def run(self, imgsz: int, batch: int, warmup: int, runs: int) -> tuple[dict, dict]:
        """Timed forward passes: (latency stats, memory figures)."""
        from optkit.measure.memory import CudaPeak, RssPeak, activation_bytes

        memory = {"cuda_peak_allocated_bytes": None, "rss_peak_growth_bytes": None, "activation_bytes": None}
        with self.thread_count():
            if self.device.type == "cuda":
                with CudaPeak(self.device) as peak:
                    stats = measure_latency(self.model, imgsz, batch, warmup, runs)
                memory["cuda_peak_allocated_bytes"] = peak.peak_bytes
            else:
                with RssPeak() as rss:
                    stats = measure_latency(self.model, imgsz, batch, warmup, runs)
                memory["rss_peak_growth_bytes"] = rss.growth_bytes
            if self.hooks:
                memory["activation_bytes"] = activation_bytes(self.model, self._input(imgsz, batch))
        return _timing(stats), memory

    def memory_method(self) -> str:
        from optkit.measure.memory import rss_method

        if self.device.type == "cuda":
            return (
                "CUDA: torch.cuda.max_memory_allocated over the warm-up and timed runs "
                "(weights, input, activations, workspace)"
            )
        return rss_method()

    def run_backward(self, imgsz: int, batch: int, warmup: int, runs: int) -> dict:
        """Timed forward + backward passes (eval mode; see measure_latency)."""
        with self.thread_count():
            return _timing(measure_latency(self.model, imgsz, batch, warmup, runs, backward=True))

    def per_layer(self, imgsz: int, batch: int, warmup: int, runs: int, layer_gflops: dict) -> tuple:
        from optkit.errors import ConfigError
        from optkit.measure.per_layer import time_torch_layers

        if not self.hooks:
            raise ConfigError("per-layer time needs forward hooks, which a TorchScript module does not run")
        with self.thread_count():
            x = self._input(imgsz, batch)
            total_ms, layers = time_torch_layers(self.model, x, warmup, runs, self._sync)
        for layer in layers:
            layer.gflops = layer_gflops.get(layer.name)
        return total_ms, layers

    def autobatch(self, imgsz: int, fraction: float) -> tuple[int | None, str]:
        if self.device.type != "cuda":
            return None, f"autobatch needs CUDA (this profile ran on {self.device.type})"
        from optkit.train.autobatch import autobatch

        batch, message = autobatch(self.model, imgsz, self.device, fraction=fraction)
        return batch, message + " (training step: forward + backward under autocast)"


class _NotFolded(Exception):
    pass


def _timing(stats: dict) -> dict:
    keys = ("warmup", "runs", "median_ms", "p90_ms", "min_ms", "mean_ms", "img_per_s")
    return {k: stats[k] for k in keys}
