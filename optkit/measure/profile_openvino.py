"""The OpenVINO side of `optkit profile`: an IR's counts, latency, memory and per-layer time from
OpenVINO's performance counters, each measured on the IR compiled for the asked input shape (a static
shape: what a deployment compiles, and faster than a dynamic one).

FLOPs are counted from the IR itself, at that shape: 2 x the multiply-accumulates of its Convolution,
GroupConvolution and MatMul ops (OpenVINO folds BatchNorm into the convolution before it on conversion,
so this is the inference form, as the PyTorch and ONNX counts are).
"""

from __future__ import annotations

from optkit.errors import ModelError
from optkit.measure.latency import latency_stats, time_calls
from optkit.measure.profile_onnx import SquareImageInput
from optkit.ovrt import numel

MAC_OPS = ("Convolution", "GroupConvolution", "MatMul")


class OpenVinoTarget(SquareImageInput):
    backend = "openvino"
    supports_backward = False
    supports_per_layer = True  # OpenVINO's performance counters time each executed node

    def __init__(self, path, threads: int | None = None, precision: str | None = None) -> None:
        """path: an IR folder or .xml (optkit.ovrt.find_ir); threads: inference threads (None: OpenVINO's
        default); precision: INFERENCE_PRECISION_HINT (None: the CPU's default, bf16 where it has it)."""
        from optkit.ovrt import count_constants, read_ir

        self.model, meta = read_ir(path)
        self.path = str(path)
        self.threads, self.precision = threads, precision
        self.notes: list[str] = []
        self.bn_folded: int | None = None
        if len(self.model.inputs) != 1:
            raise ModelError(
                f"{path} has {len(self.model.inputs)} inputs; optkit profile measures one image input"
            )
        shape = self.model.inputs[0].get_partial_shape()
        if not shape.rank.is_static or len(shape) != 4:
            raise ModelError(f"{path}: optkit profile needs one image input (N, C, H, W)")
        self.dims = [d.get_length() if d.is_static else None for d in shape]
        self.metadata = meta
        self.params = count_constants(self.model)
        self._compiled: dict[tuple[int, int, bool], object] = {}
        self.runtime_precision = self._precision_of(self._compile(self.default_imgsz or 224, 1))

    # -- facts -------------------------------------------------------------------------------------
    @property
    def device_label(self) -> str:
        return f"cpu (OpenVINO, {self.runtime_precision})"

    def used_threads(self) -> int | None:
        return self.threads

    @property
    def arch(self) -> str | None:
        arch = self.metadata.get("arch")
        return arch if isinstance(arch, str) else None

    @property
    def num_classes(self) -> int | None:
        names = self.metadata.get("names")
        return len(names) if isinstance(names, list) else None

    @property
    def stride(self) -> int:
        stride = self.metadata.get("stride")
        return stride if isinstance(stride, int) and stride > 0 else 32

    @property
    def default_imgsz(self) -> int | None:
        imgsz = self.metadata.get("imgsz")
        return imgsz if isinstance(imgsz, int) and imgsz > 0 else None

    # -- measurements --------------------------------------------------------------------------------
    def counts(self, imgsz: int, batch: int) -> dict:
        by_name = _macs(self._shaped(imgsz, batch))
        macs = sum(by_name.values())
        return {
            "params": self.params,
            "params_unfused": None,
            "gflops": 2 * macs / 1e9 if macs else None,
            "gflops_counter": "openvino-ir",
            "gflops_check": None,
            "gflops_unfused": None,
            "layer_gflops": {name: 2 * n / 1e9 for name, n in by_name.items()},
        }

    def run(self, imgsz: int, batch: int, warmup: int, runs: int) -> tuple[dict, dict]:
        from optkit.measure.memory import RssPeak

        request, x = self._request(imgsz, batch, perf=False)
        memory = {"cuda_peak_allocated_bytes": None, "rss_peak_growth_bytes": None, "activation_bytes": None}
        with RssPeak() as rss:
            times = time_calls(lambda: request.infer({0: x}), warmup, runs)
        memory["rss_peak_growth_bytes"] = rss.growth_bytes
        return {"warmup": warmup, "runs": runs, **latency_stats(times, batch)}, memory

    def memory_method(self) -> str:
        from optkit.measure.memory import rss_method

        return rss_method(", OpenVINO's compiled model included")

    def per_layer(self, imgsz: int, batch: int, warmup: int, runs: int, layer_gflops: dict) -> tuple:
        """Per-node time from OpenVINO's performance counters, summed over the timed runs."""
        from optkit.measure.per_layer import LayerTime

        request, x = self._request(imgsz, batch, perf=True)
        for _ in range(warmup):
            request.infer({0: x})
        totals: dict[str, list] = {}
        for _ in range(runs):
            request.infer({0: x})
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                entry = totals.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0])
                entry[2] += info.real_time.total_seconds() * 1e3  # s to ms
        layers = [
            LayerTime(name, f"{kind} ({exec_type})", ms / runs, 1.0, layer_gflops.get(name))
            for name, (kind, exec_type, ms) in totals.items()
        ]
        return sum(layer.ms for layer in layers), layers

    def autobatch(self, imgsz: int, fraction: float) -> tuple[int | None, str]:
        return None, "autobatch needs a PyTorch model on CUDA (this is an OpenVINO profile)"

    # -- compiling -------------------------------------------------------------------------------------
    def _shaped(self, imgsz: int, batch: int):
        model = self.model.clone()
        model.reshape(self.input_shape(imgsz, batch))
        return model

    def _compile(self, imgsz: int, batch: int, perf: bool = False):
        from optkit.ovrt import compile_ir

        key = (imgsz, batch, perf)
        if key not in self._compiled:
            self._compiled[key] = compile_ir(
                self._shaped(imgsz, batch), self.threads, self.precision, perf=perf
            )
        return self._compiled[key]

    def _request(self, imgsz: int, batch: int, perf: bool):
        import numpy as np

        request = self._compile(imgsz, batch, perf).create_infer_request()
        x = np.random.default_rng(0).random(self.input_shape(imgsz, batch), dtype=np.float32)
        return request, x

    @staticmethod
    def _precision_of(compiled) -> str:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _macs(model) -> dict[str, int]:
    """{op name: multiply-accumulates} of the model's MAC_OPS at its (static) shapes."""
    counted = {}
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind not in MAC_OPS:
            continue
        out, name = numel(op.get_output_shape(0)), op.get_friendly_name()
        weights = [int(d) for d in op.input(1).get_shape()]
        if kind == "Convolution":  # weights [Cout, Cin, kh, kw]: each output sums Cin * kh * kw products
            counted[name] = out * numel(weights[1:])
        elif kind == "GroupConvolution":  # weights [groups, Cout/g, Cin/g, kh, kw]
            counted[name] = out * numel(weights[2:])
        else:  # MatMul: each output sums over the shared dimension
            a = [int(d) for d in op.input(0).get_shape()]
            transpose_a = op.get_attributes().get("transpose_a", False)
            counted[name] = out * (a[-2] if transpose_a else a[-1])
    return counted
