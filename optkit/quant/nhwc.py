"""Layout rewrites of the onnxruntime INT8 graph that spare ONNX Runtime the Transposes its layout pass
cannot cancel.

ONNX Runtime runs int8 convolutions in NHWC: its layout pass puts Transposes around each QLinearConv and
cancels those that meet. Two survive in optkit's graph of a YOLO-style SiLU classifier, at the edges of
the int8 part, and on a 2-core machine each costs more with 2 threads than with one (uint8 stem output,
32x112x112 at 224 px: 93 us vs 27 us):
- float_producers_in_nhwc: a float Conv (the float stem) -> elementwise float op -> QuantizeLinear ->
  int8 Convs. The Transpose goes before the float op, where ONNX Runtime folds it into the float Conv's
  own layout conversion (its NCHWc ReorderOutput writes NHWC directly), and the int8 Convs are written
  as the com.microsoft QLinearConv(channels_last=1) that ONNX Runtime makes of them anyway;
- pools_in_nhwc: int8 GEMM (NHWC, float output, optkit.quant.qdq.as_int8_gemm) -> Transpose(NCHW) ->
  elementwise float op -> Q/DQ -> GlobalAveragePool. The float op and the pool (ReduceMean over H, W)
  run in NHWC and only the pooled [N, 1, 1, C] is transposed; the pool's input is no longer rounded to
  uint8 (the fake-quant model quantizes only Conv/Linear inputs).
Measured on yolo-cls-s @224, 2 threads, alternating rounds (fp32 3.60 ms): 1.98 -> 1.84 ms.
"""

from __future__ import annotations

from optkit.quant.qdq import MS_DOMAIN

ELEMENTWISE_FLOAT = {"QuickGelu", "HardSwish"}  # one input, output of its shape; run in float by ORT
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


class _Index:
    """Producers and readers of the tensors of a node list."""

    def __init__(self, nodes: list, inits: dict, outputs: set[str]):
        self.inits, self.outputs = inits, outputs
        self.producer = {o: n for n in nodes for o in n.output}
        self.readers: dict[str, list] = {}
        for n in nodes:
            for t in n.input:
                self.readers.setdefault(t, []).append(n)

    def only_reader(self, tensor: str, ops: set[str]):
        """The one node reading `tensor` when it is one of `ops` (and `tensor` is no graph output)."""
        readers = self.readers.get(tensor, [])
        if tensor in self.outputs or len(readers) != 1 or readers[0].op_type not in ops:
            return None
        return readers[0]

    def dequantized_init(self, tensor: str, dtype: int) -> list[str] | None:
        """The (values, scale, zero point) of a DequantizeLinear of an initializer of `dtype`."""
        node = self.producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self.inits:
            return None
        return list(node.input) if self.inits[node.input[0]].data_type == dtype else None


def pools_in_nhwc(nodes: list, index: _Index, opset: int) -> tuple[list, list[str]]:
    """(nodes, pools rewritten): see the module text."""
    from onnx import helper

    replace: dict[int, list] = {}
    done = []
    for back in nodes:
        gemm = index.producer.get(back.input[0]) if back.input else None
        if back.op_type != "Transpose" or _perm(back) != TO_NCHW or gemm is None:
            continue
        act = index.only_reader(back.output[0], ELEMENTWISE_FLOAT)
        q = act and index.only_reader(act.output[0], {"QuantizeLinear"})
        dq = q and index.only_reader(q.output[0], {"DequantizeLinear"})
        pool = dq and index.only_reader(dq.output[0], {"GlobalAveragePool"})
        if gemm.op_type != "MatMulIntegerToFloat" or pool is None:
            continue
        act_nhwc, pooled = act.output[0] + "_nhwc", pool.output[0] + "_nhwc"
        to_nchw = helper.make_node("Transpose", [pooled], list(pool.output), name=pooled, perm=TO_NCHW)
        replace[id(act)] = [_renamed(act, [back.input[0]], [act_nhwc])]
        replace[id(pool)] = [*_mean_over_hw(act_nhwc, pooled, pool.name, opset), to_nchw]
        replace.update({id(back): [], id(q): [], id(dq): []})
        done.append(pool.name)
    return _replaced(nodes, replace), done


def float_producers_in_nhwc(nodes: list, index: _Index) -> tuple[list, list[str]]:
    """(nodes, float Convs whose readers now get NHWC): see the module text."""
    from onnx import helper

    replace: dict[int, list] = {}
    done = []
    for conv in nodes:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or conv.input[1] not in index.inits:
            continue  # not a float Conv
        act = index.only_reader(conv.output[0], ELEMENTWISE_FLOAT)
        q = act and index.only_reader(act.output[0], {"QuantizeLinear"})
        layers = _int8_convs_reading(q, index) if q is not None else None
        if not layers:
            continue
        x = [q.output[0] + "_nhwc", q.input[1], q.input[2]]  # the uint8 NHWC tensor, scale, zero point
        conv_nhwc, act_nhwc = conv.output[0] + "_nhwc", act.output[0] + "_nhwc"
        to_nhwc = helper.make_node("Transpose", [conv.output[0]], [conv_nhwc], name=conv_nhwc, perm=TO_NHWC)
        replace[id(conv)] = [conv, to_nhwc]
        replace[id(act)] = [_renamed(act, [conv_nhwc], [act_nhwc])]
        replace[id(q)] = [_renamed(q, [act_nhwc], x[:1])]
        for dq, layer, out_q in layers:
            replace[id(layer)] = _nhwc_qlinear_conv(layer, x, out_q, index)
            replace.update({id(dq): [], id(out_q): []})
        done.append(conv.name)
    return _replaced(nodes, replace), done


def _int8_convs_reading(q, index: _Index) -> list[tuple] | None:
    """[(DequantizeLinear, Conv, its output's QuantizeLinear)] when every reader of the uint8 tensor `q`
    writes is such a QDQ Conv (int8 weights, int32 bias, uint8 output); else None."""
    from onnx import TensorProto

    if index.inits.get(q.input[2]) is None or index.inits[q.input[2]].data_type != TensorProto.UINT8:
        return None
    found = []
    for dq in index.readers.get(q.output[0], []):
        layer = dq.op_type == "DequantizeLinear" and index.only_reader(dq.output[0], {"Conv"})
        out_q = layer and index.only_reader(layer.output[0], {"QuantizeLinear"})
        if not out_q or layer.input[0] != dq.output[0] or list(dq.input[1:]) != list(q.input[1:]):
            return None
        if index.dequantized_init(layer.input[1], TensorProto.INT8) is None:
            return None
        bias = _bias(layer)
        if bias is not None and index.dequantized_init(bias, TensorProto.INT32) is None:
            return None
        found.append((dq, layer, out_q))
    return found or None


def _nhwc_qlinear_conv(layer, x: list[str], out_q, index: _Index) -> list:
    """QLinearConv(channels_last=1) on the NHWC uint8 `x`, then its output back to NCHW under the name the
    Conv's output QuantizeLinear had (ONNX Runtime cancels that Transpose against its next one)."""
    from onnx import TensorProto, helper

    weight = index.dequantized_init(layer.input[1], TensorProto.INT8)
    bias = _bias(layer)
    inputs = x + weight + [out_q.input[1], out_q.input[2]]
    if bias is not None:  # int32 on scale x_scale * w_scale, as optkit.quant.qdq writes it
        inputs.append(index.dequantized_init(bias, TensorProto.INT32)[0])
    y = out_q.output[0] + "_nhwc"
    attrs = {a.name: helper.get_attribute_value(a) for a in layer.attribute}
    return [
        helper.make_node(
            "QLinearConv", inputs, [y], name=layer.name, domain=MS_DOMAIN, channels_last=1, **attrs
        ),
        helper.make_node("Transpose", [y], list(out_q.output), name=y, perm=TO_NCHW),
    ]


def _renamed(node, inputs: list[str], outputs: list[str]):
    """A copy of `node` with its first inputs and outputs replaced."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for k, name in enumerate(inputs):
        copy.input[k] = name
    for k, name in enumerate(outputs):
        copy.output[k] = name
    return copy


def _bias(layer) -> str | None:
    return layer.input[2] if len(layer.input) > 2 and layer.input[2] else None


def _mean_over_hw(x: str, y: str, name: str, opset: int) -> list:
    """ReduceMean of NHWC `x` over H and W, keeping the dimensions (axes an input from opset 18)."""
    import numpy as np
    from onnx import helper, numpy_helper

    if opset < 18:
        return [helper.make_node("ReduceMean", [x], [y], name=name, axes=[1, 2], keepdims=1)]
    axes = numpy_helper.from_array(np.array([1, 2], np.int64))
    return [
        helper.make_node("Constant", [], [name + "_axes"], name=name + "_axes", value=axes),
        helper.make_node("ReduceMean", [x, name + "_axes"], [y], name=name, keepdims=1),
    ]


def _replaced(nodes: list, replace: dict[int, list]) -> list:
    return [m for n in nodes for m in replace.get(id(n), [n])]


def _perm(node) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def rewrite(nodes: list, inits: dict, outputs: set[str], opset: int) -> tuple[list, list[str]]:
    """Both rewrites on a finished onnxruntime node list: (nodes, names of the places rewritten). Nodes
    that became unread (the weight DequantizeLinears of the rewritten convs) are left for the caller."""
    nodes, pools = pools_in_nhwc(nodes, _Index(nodes, inits, outputs), opset)
    nodes, convs = float_producers_in_nhwc(nodes, _Index(nodes, inits, outputs))
    return nodes, convs + pools
