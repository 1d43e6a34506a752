"""The ONNX Runtime side of `optkit profile`: an ONNX graph's facts, counts, latency, memory and
per-node time, measured on a session the caller opened (optkit.workflows.profile opens the file).

The input shape comes from the graph (fixed dimensions must match what is asked for; dynamic ones take
the asked size and batch); the class count and default input size from the model's metadata when the
exporter wrote them (`names`, `imgsz`, `stride`, `arch` keys), else from the graph.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optkit.errors import ModelError
from optkit.measure.latency import latency_stats, time_calls

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# ONNX input element type -> numpy dtype name (image models take floats; quantized ones may take uint8)
_DTYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 3: "int8"}


def read_metadata(model: onnx.ModelProto) -> dict:
    """{"names": list | None, "imgsz": int | None, "stride": int | None, "arch": str | None} from the
    model's metadata_props; values may be JSON or Python literals (Ultralytics writes dict reprs)."""
    props = {p.key: p.value for p in model.metadata_props}
    names = _literal(props.get("names"))
    if isinstance(names, dict):  # {0: "cat", 1: "dog"}
        names = [names[k] for k in sorted(names)]
    imgsz = _literal(props.get("imgsz"))
    if isinstance(imgsz, (list, tuple)) and imgsz and all(v == imgsz[0] for v in imgsz):
        imgsz = imgsz[0]
    arch = _literal(props.get("arch"))
    if isinstance(arch, dict):
        arch = arch.get("name")
    stride = _literal(props.get("stride"))
    if isinstance(stride, (list, tuple)) and stride:
        stride = max(stride)
    return {
        "names": list(names) if isinstance(names, (list, tuple)) else None,
        "imgsz": imgsz if isinstance(imgsz, int) and imgsz > 0 else None,
        "stride": stride if isinstance(stride, int) and stride > 0 else None,
        "arch": arch if isinstance(arch, str) else props.get("arch"),
    }


def _literal(text: str | None):
    if text is None:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


class SquareImageInput:
    """What a target whose input is one (N, C, H, W) image batch answers from `self.dims` (None for a
    dynamic dimension) and `self.path`: shared by the ONNX Runtime and OpenVINO targets."""

    def fixed_side(self) -> int | None:
        """The input side the graph fixes, or None when its height and width are dynamic."""
        h, w = self.dims[2], self.dims[3]
        if h is None and w is None:
            return None
        if h != w:
            raise ModelError(f"{self.path} takes {h}x{w} inputs; optkit profile measures square inputs")
        return h

    def check_batches(self, batches: list[int]) -> None:
        fixed = self.dims[0]
        wrong = [b for b in batches if fixed is not None and b != fixed]
        if wrong:
            raise ModelError(
                f"{self.path} has a fixed batch size of {fixed} (export it with a dynamic batch axis); "
                f"cannot run batch {wrong[0]}"
            )

    def input_shape(self, imgsz: int, batch: int) -> list[int]:
        return [batch, self.dims[1] or 3, imgsz, imgsz]


class OnnxTarget(SquareImageInput):
    backend = "onnxruntime"
    supports_backward = False  # a session only runs forward
    supports_per_layer = True  # ONNX Runtime's profiler times each node

    def __init__(
        self,
        proto: onnx.ModelProto,
        open_session: Callable[[str | None], Any],
        label: str,
        providers: list[str],
        threads: int | None = None,
    ) -> None:
        """proto: the parsed graph (shapes, counts, metadata); open_session(profile_prefix): an ONNX Runtime
        session of it on `providers` with `threads` intra-op threads (None: ONNX Runtime's default), its
        profiler on and writing to `profile_prefix` unless that is None (per-node time); label: how messages
        name the model (its path). The graph is checked before the first session is opened."""
        from optkit.measure.onnx_flops import graph_input

        self.path = label
        self.proto = proto
        self.open_session = open_session
        self.providers = providers
        self.threads = threads
        self.notes: list[str] = []
        self.bn_folded: int | None = None
        self.node_macs: dict[str, int] = {}  # set by counts(): MACs per node at the profiled shape
        _require_one_input(self.path, self.proto)
        value = graph_input(self.proto)
        self.input_name = value.name
        dims = value.type.tensor_type.shape.dim
        self.dims = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(self.dims) != 4:
            raise ModelError(
                f"{self.path}: optkit profile needs one image input (N, C, H, W); "
                f"input {value.name!r} has {len(self.dims)} dimensions"
            )
        elem = value.type.tensor_type.elem_type
        if elem not in _DTYPES:
            raise ModelError(
                f"{self.path}: input {value.name!r} has element type {elem}, not an image tensor"
            )
        self.dtype = _DTYPES[elem]
        self.metadata = read_metadata(self.proto)
        self.session = open_session(None)

    # -- facts -------------------------------------------------------------------------------------
    @property
    def device_label(self) -> str:
        main = self.providers[0]
        return ("cuda" if main.startswith("CUDA") else "cpu") + f" ({main})"

    def used_threads(self) -> int | None:
        return self.threads  # None: ONNX Runtime's default (one per physical core)

    @property
    def arch(self) -> str | None:
        return self.metadata["arch"]

    @property
    def num_classes(self) -> int | None:
        if self.metadata["names"]:
            return len(self.metadata["names"])
        outputs = self.proto.graph.output
        if outputs:
            dims = outputs[0].type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                return dims[1].dim_value
        return None

    @property
    def stride(self) -> int:
        """Pixels: input sides must be a multiple of it (the metadata's, else 32 as for optkit models)."""
        return self.metadata["stride"] or 32

    @property
    def default_imgsz(self) -> int | None:
        """The input side the metadata records (None: none recorded)."""
        return self.metadata["imgsz"]

    def _feed(self, imgsz: int, batch: int) -> dict:
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.random(self.input_shape(imgsz, batch), dtype=np.float32)
        if self.dtype in ("uint8", "int8"):
            x = (x * 255 - (128 if self.dtype == "int8" else 0)).astype(self.dtype)
        return {self.input_name: x.astype(self.dtype)}

    # -- measurements --------------------------------------------------------------------------------
    def counts(self, imgsz: int, batch: int) -> dict:
        from optkit.measure.onnx_flops import count_graph

        count = count_graph(self.proto, self.input_shape(imgsz, batch))
        self.bn_folded = count.bn_folded
        self.node_macs = count.node_macs
        if count.problem:
            self.notes.append(f"ONNX FLOPs unavailable: {count.problem}")
        return {
            "params": count.params,
            "params_unfused": None,
            "gflops": count.gflops,
            "gflops_counter": "onnx-graph",
            "gflops_check": None,
            "gflops_unfused": None,
            "layer_gflops": {},
        }

    def run(self, imgsz: int, batch: int, warmup: int, runs: int) -> tuple[dict, dict]:
        from optkit.measure.memory import RssPeak

        feed = self._feed(imgsz, batch)
        memory = {"cuda_peak_allocated_bytes": None, "rss_peak_growth_bytes": None, "activation_bytes": None}
        with RssPeak() as rss:
            times = time_calls(lambda: self.session.run(None, feed), warmup, runs)
        if not self.providers[0].startswith("CUDA"):
            memory["rss_peak_growth_bytes"] = rss.growth_bytes
        return {"warmup": warmup, "runs": runs, **latency_stats(times, batch)}, memory

    def memory_method(self) -> str:
        from optkit.measure.memory import rss_method

        if self.providers[0].startswith("CUDA"):
            return "ONNX Runtime CUDA memory is not measured"
        return rss_method(", ONNX Runtime's arena included")

    def per_layer(self, imgsz: int, batch: int, warmup: int, runs: int, layer_gflops: dict) -> tuple:
        """Per-node time from ONNX Runtime's profiler, on a second session with profiling on."""
        from optkit.measure.per_layer import ort_trace_layers

        feed = self._feed(imgsz, batch)
        with tempfile.TemporaryDirectory(prefix="optkit-ort-") as folder:
            session = self.open_session(os.path.join(folder, "profile"))
            for _ in range(warmup + runs):
                session.run(None, feed)
            trace = session.end_profiling()
            with open(trace, encoding="utf-8") as f:
                events = json.load(f)
        total_ms, layers = ort_trace_layers(events, skip_runs=warmup)
        keys = _node_keys(self.proto, self.node_macs)
        claimed: set[int] = set()  # each counted node's FLOPs go to one runtime node
        for layer in sorted(layers, key=lambda r: r.ms, reverse=True):
            found = _match(layer.name, keys)
            if found is not None and found[0] not in claimed:
                claimed.add(found[0])
                layer.gflops = found[1]
        return total_ms, layers

    def autobatch(self, imgsz: int, fraction: float) -> tuple[int | None, str]:
        return None, "autobatch needs a PyTorch model on CUDA (this is an ONNX Runtime profile)"


def _require_one_input(path: str, proto: onnx.ModelProto) -> None:
    """profile feeds one random image batch: a graph with other inputs (a second image, a mask, a size)
    would need values optkit cannot invent, so it is refused in one line, naming them."""
    inits = {t.name for t in proto.graph.initializer}  # old IR versions list initializers as inputs
    names = [i.name for i in proto.graph.input if i.name not in inits]
    if len(names) > 1:
        listed = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
        raise ModelError(
            f"{path} has {len(names)} inputs ({listed}); optkit profile measures models with one image "
            "input (N, C, H, W)"
        )


def _node_keys(proto: onnx.ModelProto, node_macs: dict[str, int]) -> dict[str, tuple[int, float]]:
    """(node index, GFLOPs) of each counted node, keyed by its name and by its output names (ONNX
    Runtime names the nodes it rewrites after the original node or output, e.g. `<output>_nchwc`)."""
    from optkit.measure.onnx_flops import node_name

    keys: dict[str, tuple[int, float]] = {}
    for index, node in enumerate(proto.graph.node):
        macs = node_macs.get(node_name(node, index))
        if macs:
            for key in (node_name(node, index), *node.output):
                keys[key] = (index, 2 * macs / 1e9)
    return keys


def _match(ort_name: str, keys: dict[str, tuple[int, float]]) -> tuple[int, float] | None:
    """The counted node an ONNX Runtime node name derives from (longest matching name prefix)."""
    best = max((k for k in keys if ort_name.startswith(k)), key=len, default=None)
    return keys[best] if best is not None else None
