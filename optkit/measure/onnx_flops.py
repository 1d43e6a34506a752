"""Parameters and FLOPs of an ONNX graph, counted by ultralytics-thop's rules (see `optkit.measure.flops`),
so that an exported model reports what its PyTorch source reports.

Tensor shapes come from `onnx.shape_inference.infer_shapes` (with data propagation) after the graph input
is pinned to the requested (batch, C, H, W); shapes it cannot infer (e.g. a Resize whose sizes are computed
from Shape ops) are read from one ONNX Runtime run on zeros.

MACs per node, as thop counts the matching module:

    Conv / ConvInteger / QLinearConv   output elements x (input channels / groups) x kernel area
    ConvTranspose                      input elements x (output channels / groups) x kernel area
    Gemm                               M x N x K            MatMul (+Integer, QLinear, com.microsoft
                                                            MatMulIntegerToFloat): output x contracted
    BatchNormalization, Instance-/Layer-/GroupNormalization   4 per input element (affine)
    GlobalAveragePool, ReduceMean      input + output elements      AveragePool: window inputs + outputs
    PRelu 1 per element; Softmax / LogSoftmax thop's rule; Resize linear 5/11/31, cubic 259 per output
    everything else (Relu, Sigmoid, Mul, Add, Concat, MaxPool, Reshape, ...)   0

Convention shared with `optkit profile` on PyTorch models: networks are counted in inference form, with
every BatchNorm that directly follows a conv/linear folded into it (what `optkit fuse` and the ONNX
exporter do). Here a BatchNormalization node whose input is a Conv/ConvTranspose/Gemm output used by
nothing else counts as folded: no FLOPs, no parameters of its own, and it gives the layer a bias (one per
channel) when the layer had none. So a graph exported with or without constant folding, its .pt source
and the fused .pt all give the same numbers.

Parameters are the elements of the weight and bias inputs of parametric nodes (the table below), found
through Identity / Cast / Transpose / Quantize- / DequantizeLinear chains (QDQ graphs) and Constant nodes,
plus the bias of an Add that follows a MatMul with a constant weight (a Linear on 3-D input). Each layer
counts once: a node whose weight tensor an earlier node already used is that layer applied again (thop
counts its FLOPs again, not its parameters). Biases are not merged across layers, because exporters and
simplifiers merge equal-valued constants (zero biases of a fresh model) that PyTorch holds separately.
Known limits: ops outside the default ONNX domain (optkit's MatMulIntegerToFloat and QLinearConv
excepted) and control-flow subgraphs are not counted (FLOPs are then reported unavailable for
subgraphs); distinct layers with bit-identical weights merged by a simplifier count once.
Input channels a constant Pad adds before a conv (optkit's int8 stem reads the image padded to 4
channels, with zero weights there: optkit.quant.qdq._Graph.pad_stem) are not counted, in MACs or params.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import ModelError

if TYPE_CHECKING:
    import onnx

# op type -> input indices that hold parameters (weight first: it names the layer for de-duplication)
PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "ConvInteger": (1,),
    "QLinearConv": (3, 8),
    "Gemm": (1, 2, 0),
    "MatMul": (1, 0),
    "MatMulInteger": (1, 0),
    "QLinearMatMul": (3, 0),
    "MatMulIntegerToFloat": (1, 6),  # com.microsoft: optkit's int8 1x1 convs (optkit.quant.qdq)
    "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "PRelu": (1,),
}
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # gather convs: output-sized work
_MATMULS = {
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "MatMulIntegerToFloat": (0, 1),
}
# the com.microsoft ops counted (the rest are not): optkit's int8 GEMMs and NHWC convs (optkit.quant)
_COUNTED_CONTRIB_OPS = {"MatMulIntegerToFloat", "QLinearConv"}
_NORMS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization")
_FOLD_INTO = ("Conv", "ConvTranspose", "Gemm")  # layers a following BatchNormalization folds into
_PASS_THROUGH = (
    "Identity",
    "Cast",
    "Transpose",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "DequantizeLinear",
    "QuantizeLinear",
)
_RESIZE_LINEAR = {3: 5, 4: 11, 5: 31}  # thop's ops per output element of (bi/tri)linear upsampling

log = logging.getLogger(__name__)


@dataclass
class GraphCount:
    params: int  # parameter elements, inference form (BatchNorm after a conv/linear folded)
    macs: int | None  # multiply-accumulates of one forward pass at the pinned input shape; None: unknown
    node_macs: dict[str, int] = field(default_factory=dict)  # node name -> MACs (non-zero only)
    bn_folded: int = 0  # BatchNormalization nodes counted as folded into the layer before them
    problem: str | None = None  # why macs is None

    @property
    def gflops(self) -> float | None:
        return None if self.macs is None else 2 * self.macs / 1e9  # 2 FLOPs per MAC


def node_name(node: onnx.NodeProto, index: int) -> str:
    """A node's name, or `<op type>_<index in graph>` for unnamed nodes."""
    return node.name or f"{node.op_type}_{index}"


def count_graph(model: onnx.ModelProto, input_shape: list[int] | None = None) -> GraphCount:
    """Count params and MACs of `model`'s main graph with its first input pinned to `input_shape`
    (None: the shape in the graph). `model` is not modified."""
    import onnx

    model = _pinned(model, input_shape) if input_shape is not None else model
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises several unrelated types for malformed graphs
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"ONNX shape inference failed at input shape {input_shape}: {first}") from None
    runtime = model if input_shape is not None and not _has_external_data(model) else None
    return _Counter(inferred.graph).count(runtime)


def _has_external_data(model: onnx.ModelProto) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _runtime_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the values `names`, read from one ONNX Runtime run of `model` (input pinned) on zeros,
    for graphs whose static shape inference stops at data-dependent ops (e.g. Resize sizes computed from
    Shape ops). {} when ONNX Runtime cannot run it: the count then says what is missing."""
    import onnx

    if not names:
        return {}
    try:
        import numpy as np
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known = {o.name for o in probe.graph.output}
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        value = graph_input(model)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        values = session.run(names, {value.name: np.zeros(shape, dtype=dtype)})
    except Exception as e:  # the count reports the shapes as unknown instead
        log.debug("ONNX Runtime shape probe failed: %s: %s", type(e).__name__, e)
        return {}
    return {n: tuple(np.shape(v)) for n, v in zip(names, values, strict=True)}


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The first graph input that is not an initializer (old IR versions list initializers as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise ModelError("the ONNX graph has no inputs")
    return inputs[0]


def _pinned(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    value = graph_input(pinned)
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"the ONNX input {value.name!r} has {len(dims)} dimensions, expected {len(shape)}")
    for dim, size in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    del pinned.graph.value_info[:]  # shapes recorded for another input size (simplifiers write them)
    return pinned


class _Counter:
    def __init__(self, graph: onnx.GraphProto) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.consts: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.consts[node.output[0]] = tuple(numpy_helper.to_array(attr.t).shape)
        self.shapes: dict[str, tuple[int, ...] | None] = dict(self.consts)
        for value in (*graph.input, *graph.value_info, *graph.output):
            self.shapes.setdefault(value.name, _static_shape(value))
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.users: dict[str, list] = {}  # value name -> the nodes that read it
        for node in graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def count(self, runtime: onnx.ModelProto | None = None) -> GraphCount:
        """Count; `runtime`: the pinned model, run once with ONNX Runtime for shapes inference missed."""
        from onnx import AttributeProto

        subgraph = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
        result = GraphCount(params=0, macs=0)
        seen_weights: set[str] = set()
        unsized: list[tuple[str, onnx.NodeProto]] = []  # nodes whose MACs need a shape inference missed
        for index, node in enumerate(self.graph.node):
            name = node_name(node, index)
            if node.domain not in ("", "ai.onnx") and node.op_type not in _COUNTED_CONTRIB_OPS:
                continue
            if any(a.type in subgraph for a in node.attribute):  # If / Loop / Scan bodies
                result.problem = f"node {name} ({node.op_type}) has a subgraph, which is not counted"
                continue
            folded = self._folds(node)
            result.bn_folded += folded
            result.params += self._params(node, seen_weights, folded)
            if not folded:
                self._add_macs(result, name, node, unsized)
        if unsized and runtime is not None:
            missing = {
                v
                for _, node in unsized
                for v in (*node.input, *node.output)
                if v and self.shapes.get(v) is None
            }
            self.shapes.update(_runtime_shapes(runtime, sorted(missing)))
            retry, unsized = unsized, []
            for name, node in retry:
                self._add_macs(result, name, node, unsized)
        if unsized:
            more = f" and {len(unsized) - 1} more" if len(unsized) > 1 else ""
            result.problem = f"the shapes of node {unsized[0][0]}{more} could not be inferred"
        if result.problem:
            result.macs = None
        return result

    def _add_macs(self, result: GraphCount, name: str, node: onnx.NodeProto, unsized: list) -> None:
        try:
            macs = self._macs(node)
        except _Unknown:
            unsized.append((name, node))
            return
        if macs:
            result.node_macs[name] = macs
            result.macs += macs

    # -- parameters ---------------------------------------------------------------------------------
    def _params(self, node: onnx.NodeProto, seen_weights: set[str], folded: bool) -> int:
        op = node.op_type
        if folded:
            return 0
        if op == "Add":
            return self._matmul_bias(node)
        slots = [i for i in PARAM_INPUTS.get(op, ()) if i < len(node.input) and node.input[i]]
        tensors = [(i, self._const(node.input[i])) for i in slots]
        tensors = [(i, t) for i, t in tensors if t is not None]
        if not tensors:
            return 0
        weight = tensors[0][1]
        if weight in seen_weights:  # the same layer applied again
            return 0
        seen_weights.add(weight)
        total = sum(math.prod(self.consts[t]) for _, t in tensors)
        if op in _WEIGHT_INPUT:  # zero weights of padded input channels are not the model's
            w = self.consts[weight]
            total -= w[0] * self._padded_channels(node) * math.prod(w[2:])
        bn = self._folded_bn_after(node) if op in _FOLD_INTO and not self._has_bias(node) else None
        if bn is not None:
            total += math.prod(self.shapes.get(bn.input[1]) or (0,))  # the bias folding gives the layer
        return total

    def _matmul_bias(self, node: onnx.NodeProto) -> int:
        for a, b in ((0, 1), (1, 0)):
            bias = self._const(node.input[b]) if b < len(node.input) else None
            producer = self.producer.get(node.input[a])
            if bias is None or producer is None or producer.op_type not in _MATMULS:
                continue
            if any(self._const(i) is not None for i in producer.input[:2]):
                return math.prod(self.consts[bias])
        return 0

    def _has_bias(self, node: onnx.NodeProto) -> bool:
        return len(node.input) > 2 and bool(node.input[2])

    def _const(self, name: str) -> str | None:
        """The initializer / Constant a value comes from, through pass-through nodes; None for activations."""
        for _ in range(16):  # bounded: chains are short, and a malformed graph must not loop forever
            if name in self.consts:
                return name
            node = self.producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            name = node.input[0]
        return None

    def _padded_channels(self, node: onnx.NodeProto) -> int:
        """Channels a constant Pad appends to `node`'s data input (through Q/DQ and other pass-through
        nodes) and nothing else: 0 when there is no such Pad."""
        from onnx import numpy_helper

        name = node.input[0]
        for _ in range(16):  # bounded, as in _const
            producer = self.producer.get(name)
            if producer is None:
                return 0
            if producer.op_type == "Pad":
                break
            if producer.op_type not in _PASS_THROUGH or not producer.input:
                return 0
            name = producer.input[0]
        else:
            return 0
        pads = next(
            (t for t in self.graph.initializer if len(producer.input) > 1 and t.name == producer.input[1]),
            None,
        )
        if pads is None or _attr(producer, "mode", b"constant") != b"constant":
            return 0
        values = numpy_helper.to_array(pads).tolist()
        rank = len(values) // 2
        added = values[rank + 1] if rank > 1 else 0  # the end of axis 1, the channels
        others = [v for i, v in enumerate(values) if i != rank + 1]
        return int(added) if added > 0 and not any(others) else 0

    # -- BatchNorm folding --------------------------------------------------------------------------
    def _folds(self, node: onnx.NodeProto) -> bool:
        """A BatchNormalization fed by a conv/linear whose output nothing else reads: folded."""
        if node.op_type != "BatchNormalization" or len(node.output) > 1 and any(node.output[1:]):
            return False  # training-mode BN (running-stat outputs) does not fold
        producer = self.producer.get(node.input[0])
        return (
            producer is not None
            and producer.op_type in _FOLD_INTO
            and len(self.users.get(node.input[0], [])) == 1
            and node.input[0] not in self.outputs
        )

    def _folded_bn_after(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        users = self.users.get(node.output[0], [])
        if len(users) == 1 and users[0].input[0] == node.output[0] and self._folds(users[0]):
            return users[0]
        return None

    # -- MACs -----------------------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None:
            raise _Unknown(name)
        return shape

    def _macs(self, node: onnx.NodeProto) -> int:
        op = node.op_type
        if op in _WEIGHT_INPUT:
            w = self._shape(node.input[_WEIGHT_INPUT[op]])
            y = self._shape(node.output[0])
            return math.prod(y) * (w[1] - self._padded_channels(node)) * math.prod(w[2:])
        if op == "ConvTranspose":
            w, x = self._shape(node.input[1]), self._shape(node.input[0])
            return math.prod(x) * w[1] * math.prod(w[2:])
        if op == "Gemm":
            a, y = self._shape(node.input[0]), self._shape(node.output[0])
            k = a[0] if _attr(node, "transA", 0) else a[1]
            return math.prod(y) * k
        if op in _MATMULS:
            a, y = self._shape(node.input[_MATMULS[op][0]]), self._shape(node.output[0])
            return math.prod(y) * a[-1]
        if op in _NORMS:
            return 4 * math.prod(self._shape(node.input[0]))  # thop: 2 per element, x2 when affine
        if op in (
            "GlobalAveragePool",
            "ReduceMean",
        ):  # the dynamo exporter writes AdaptiveAvgPool as ReduceMean
            return math.prod(self._shape(node.input[0])) + math.prod(self._shape(node.output[0]))
        if op == "AveragePool":
            return self._avgpool(node)
        if op == "PRelu":
            return math.prod(self._shape(node.input[0]))
        if op in ("Softmax", "LogSoftmax"):
            return self._softmax(node)
        if op == "Resize":
            mode = _attr(node, "mode", b"nearest")
            y = self._shape(node.output[0])
            per = {b"linear": _RESIZE_LINEAR.get(len(y), 0), b"cubic": 259}.get(mode, 0)
            return per * math.prod(y)
        return 0

    def _avgpool(self, node: onnx.NodeProto) -> int:
        """thop's count_avgpool: one add per input in each window (padding per count_include_pad) + one
        divide per output."""
        x, y = self._shape(node.input[0]), self._shape(node.output[0])
        kernel = list(_attr(node, "kernel_shape", []))
        dims = len(kernel)
        strides = list(_attr(node, "strides", [1] * dims))
        pads = list(_attr(node, "pads", [0] * 2 * dims))
        include_pad = bool(_attr(node, "count_include_pad", 0))
        windows = 1
        for d in range(dims):
            size, out, k, s = x[-dims + d], y[-dims + d], kernel[d], strides[d]
            begin, end = pads[d], pads[d + dims]
            lower, upper = (-begin, size + end) if include_pad else (0, size)
            windows *= sum(
                max(min(i * s - begin + k, upper) - max(i * s - begin, lower), 0) for i in range(out)
            )
        return math.prod(x[:-dims]) * windows + math.prod(y)

    def _softmax(self, node: onnx.NodeProto) -> int:
        x = self._shape(node.input[0])
        n = x[_attr(node, "axis", -1)] if x else 1  # opset >= 13 semantics: one axis, default the last
        rows = math.prod(x) // n if n else 0
        macs = rows * (3 * n - 1) if n else 0  # n exp + (n - 1) add + n divide: thop's calculate_softmax
        return macs + (rows if node.op_type == "LogSoftmax" else 0)


class _Unknown(Exception):
    """A shape the count needs was not inferred."""


def _static_shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return None if any(d is None for d in dims) else tuple(dims)


def _attr(node: onnx.NodeProto, name: str, default):
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default
