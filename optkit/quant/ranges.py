"""Activation ranges of a float ONNX graph, measured with ONNX Runtime on calibration images.

ModelOpt calibrates only Conv/Linear inputs. The ONNX Runtime flavour of the INT8 graph also quantizes
the tensors around Add, Concat, pooling and activations, so that ONNX Runtime can run whole chains in
int8; their ranges come from here: min and max of every float tensor over the calibration images. They
are keyed by tensor name in the graph optkit's exporter writes for the model, stored in the checkpoint,
and looked up again when `export` rebuilds the same graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import torch

FLOAT = 1  # onnx.TensorProto.FLOAT


def tensor_ranges(proto: onnx.ModelProto, batches: Iterable[torch.Tensor]) -> dict[str, list[float]]:
    """{tensor name: [min, max]} over all batches, for every float tensor a node of `proto` produces."""
    import numpy as np
    import onnxruntime as ort

    probe, names = _with_every_tensor_as_output(proto)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for x in batches:
        outputs = session.run(names, {input_name: x.numpy().astype(np.float32)})
        for name, value in zip(names, outputs, strict=True):
            if value.size:
                lo[name] = min(lo.get(name, np.inf), float(value.min()))
                hi[name] = max(hi.get(name, -np.inf), float(value.max()))
    return {n: [lo[n], hi[n]] for n in lo}


def _with_every_tensor_as_output(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    present = {o.name for o in probe.graph.output}
    names = [o for node in probe.graph.node for o in node.output if o and types.get(o) == FLOAT]
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    return probe, names
