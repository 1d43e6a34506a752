"""INT8 coverage: what ONNX Runtime actually runs in int8 after its graph optimizations.

A QDQ graph only says where values are rounded; ONNX Runtime decides at session creation which
DequantizeLinear -> op -> QuantizeLinear groups become QLinear kernels. This reads the optimized graph
it writes (`SessionOptions.optimized_model_filepath`, every optimization level as a default session
runs it, layout passes included, the CPU provider) and
counts, for the layers (Conv, Gemm/MatMul), how many run as int8 kernels and how many stay float, and
which other ops still compute in float.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

INT8_LAYER_OPS = {
    "QLinearConv",
    "ConvInteger",
    "QLinearMatMul",
    "MatMulInteger",
    "QGemm",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}
FLOAT_LAYER_OPS = {"Conv", "FusedConv", "Gemm", "MatMul", "FusedGemm", "FusedMatMul"}
BOUNDARY_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# ops ONNX Runtime runs directly on uint8/int8 tensors (output type = input type)
TYPE_PRESERVING_OPS = {
    "MaxPool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Slice",
    "Concat",
    "Identity",
    "Pad",
}
SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Flatten", "Squeeze", "Constant"}


@dataclass
class Coverage:
    int8_layers: int  # Conv/Gemm that run as QLinearConv / QGemm / ...
    float_layers: int  # Conv/Gemm that still run in float
    float_layer_names: list[str] = field(default_factory=list)
    float_ops: dict[str, int] = field(default_factory=dict)  # other float compute ops by type
    int8_ops: dict[str, int] = field(default_factory=dict)  # QLinear* and other int8 kernels by type
    quantize_nodes: int = 0  # QuantizeLinear/DequantizeLinear left (each a conversion at run time)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def int8_coverage(path: str | os.PathLike) -> Coverage:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="optkit-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as sessions run
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized)).graph
    return _count(graph)


def _count(graph) -> Coverage:
    int8_ops: Counter = Counter()
    float_ops: Counter = Counter()
    float_layers: list[str] = []
    boundary = 0
    quantized = _int8_initializers(graph)  # tensors known to hold int8/uint8 values
    for node in graph.node:
        op = node.op_type
        int8_in = bool(node.input) and node.input[0] in quantized
        if op == "QuantizeLinear" or op.startswith("QLinear") or (int8_in and op in TYPE_PRESERVING_OPS):
            quantized.update(node.output)
        if op in BOUNDARY_OPS:
            boundary += 1
        elif op in INT8_LAYER_OPS or op.startswith("QLinear") or (int8_in and op in TYPE_PRESERVING_OPS):
            int8_ops[op] += 1
        elif op in FLOAT_LAYER_OPS:
            float_layers.append(node.name or op)
        elif op not in SHAPE_OPS:
            float_ops[op] += 1
    layers = sum(v for k, v in int8_ops.items() if k in INT8_LAYER_OPS)
    return Coverage(
        int8_layers=layers,
        float_layers=len(float_layers),
        float_layer_names=float_layers,
        float_ops=dict(float_ops),
        int8_ops=dict(int8_ops),
        quantize_nodes=boundary,
    )


def _int8_initializers(graph) -> set[str]:
    from onnx import TensorProto

    small = (TensorProto.INT8, TensorProto.UINT8)
    return {t.name for t in graph.initializer if t.data_type in small}
