"""INT8 QDQ ONNX graphs from a float graph plus calibrated scales, in three flavours.

`tensorrt`: what TensorRT's explicit quantization expects and what ModelOpt exports: QuantizeLinear ->
DequantizeLinear (int8, zero point 0, scale amax/127) on the input of every quantized Conv/Gemm, one pair
per quantizer, and the weights as int8 initializers (per output channel) behind DequantizeLinear. It
computes exactly what ModelOpt's fake-quant model computes.

`openvino`: the tensorrt flavour laid out for OpenVINO's CPU plugin, which fuses a FakeQuantize into the
convolution that produces its tensor only when every reader of that tensor reads the quantized values.
So one pair per tensor, shared by all its readers (the largest of their calibrated amaxes), and a tensor
that a Split produces is quantized before the Split instead (the largest amax of its parts): a C2f
block's cv1 then writes int8 that its bottleneck, its residual Add and its Concat all read, where the
tensorrt flavour leaves a float copy and a separate bf16 quantize op per reader (seen in the compiled
model's runtime graph). Measured (yolo-det-n, 640 px, 2 threads, OpenVINO 2026.4.1, 9 interleaved rounds,
2026-12-03): 1.04x the
tensorrt flavour's IR speed, mAP50-95 0.5720 against 0.5707 (NNCF 1.04x, 0.5727); yolo-cls-s 224 px
1.00x (real digits top-1 96.66% against 96.94%, NNCF 96.66%). Rounding the residual Adds' inputs as well
(as NNCF does) measured 0.6-0.8 points of mAP50-95 lower on the detector, so they stay float.

`onnxruntime`: what ONNX Runtime's CPU kernels run in int8 end to end. ONNX Runtime fuses a node into its
QLinear form only when every float input comes from DequantizeLinear and the output goes to
QuantizeLinear, and its fast kernels want uint8 activations (measured: int8 activations run no faster
than fp32). So here
- activations are uint8: a signed tensor gets zero point 128 and scale amax/127 (the same grid as the
  fake-quant int8), a non-negative one zero point 0 and scale amax/255 (twice the resolution);
- Q/DQ also go around Add, Concat, pooling, Sigmoid/Mul and the other ops ONNX Runtime has int8 kernels
  for, with ranges measured on the calibration images (optkit.quant.ranges), so whole chains stay int8;
- Relu/Clip(0, 6) outputs get zero point 0, which lets ONNX Runtime drop the Relu into the producer's
  requantization; their inputs get no Q/DQ of their own;
- MaxPool/Flatten/Reshape keep their input's scale (ONNX Runtime runs them on uint8 only then);
- a tensor read only by a Concat is quantized on the Concat's grid (the next layer's calibrated input
  range, as in the fake-quant model): rounded once instead of twice, and ONNX Runtime's QLinearConcat
  copies it instead of requantizing byte by byte (demo ONNX SQNR 31.6 -> 31.9 dB);
- QLinearConv biases are int32 with scale s_input * s_weight, as it needs;
- SiLU (Sigmoid -> Mul) is written as one `com.microsoft` QuickGelu(alpha=1) with Q/DQ on its input and
  output only (fuse_silu): ONNX Runtime has no int8 SiLU, and one float op between DQ and Q is faster
  than QLinearSigmoid + QLinearMul (and rounds once less); its input gets no Q/DQ when its producer is
  float (the stem below): that pair would only round the largest tensor and cost two passes over it;
- SiLU grids hold only values SiLU can tell apart: its output (a Conv input) is uint8 from SiLU's minimum
  -0.28 to the calibrated amax (about twice the fake-quant resolution, whose negative half is unused); its
  input is clipped below where SiLU is within half an output step of 0 and above where the output grid
  ends; the same lower bound carries through Concat, Add and MaxPool (graph.lower_bound). Demo model,
  ONNX output SQNR vs fp32: 27.4 -> 31.6 dB (ONNX Runtime's quantize_static: 29.5 dB);
- a 1x1 Conv whose output only feeds ops ONNX Runtime computes in float (QuickGelu, HardSwish) is
  written as `com.microsoft` MatMulIntegerToFloat: an int8 GEMM on the uint8 input that writes float,
  between Transposes that ONNX Runtime's NHWC layout pass cancels; no uint8 output for a
  DequantizeLinear to undo at once, one rounding less, float bias (float_output_gemms);
- the two Transposes that pass cannot cancel go (optkit.quant.nhwc): after a float stem the int8 convs
  read NHWC, and the head's pool runs in NHWC on the int8 GEMM's float output;
- the stem (the Conv reading the image: 3 input channels) stays float, with the fake-quant model's
  rounded weights and the image not quantized, when its output goes straight into a float op (SiLU as
  QuickGelu, HardSwish): faster there, slower for a ReLU stem (named in `float_layers` when chosen).
  The image is still clipped to the stem quantizer's range, as the fake-quant model saturates it: a
  detector's image quantizer holds 0..1 (amax ~0.99), and without the Clip a pixel beyond it went into
  the stem unclipped (demo detector, random N(0, 1) inputs: scores 0.71 of their scale off, 0.078 with it);
- an int8 stem reads the uint8 image padded with zero channels to STEM_CHANNELS (4), with zero
  weights for them (pad_stem): the same sums, and ONNX Runtime's int8 convolution runs much faster on 4
  input channels than on 3 (ReLU detector at 640 px: stem 2.34 -> 0.94 ms, the Pad 0.15 ms; resnet18 at
  224 px: 0.81 -> 0.51 ms; 2 threads, ONNX Runtime's profiler, 2026-12-03);
- float layers (skipped, stem) read float tensors, never a DequantizeLinear output: ONNX Runtime would
  otherwise quantize their weights itself (its WeightBiasQuantization pass) and run them in int8.
benchmarks/silu_remedy.py measures these choices. The graph output (the logits) always stays float.
With `float_tail` (a detector: optkit.stages.task_output.FLOAT_TAIL_TASKS) the onnxruntime flavour also
leaves float every tensor from which no quantized layer is reached, the post-processing after the last
layers (a detector's box decode, class sigmoid and final concat), as the fake-quant model computes it:
on one uint8 grid the scores (<= 1) would share steps with the box pixels. The last layers' 1x1 convs
then write float as int8 GEMMs (float_output_gemms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import ConfigError
from optkit.limits import ConfigFieldsError

if TYPE_CHECKING:
    import numpy as np
    import onnx

MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (QuickGelu)
LAYER_OPS = ("Conv", "Gemm")  # the ops ModelOpt quantizes (Conv2d, Linear)
# ops whose inputs and outputs the onnxruntime flavour quantizes (ONNX Runtime has QLinear/uint8 kernels)
INT8_OPS = {
    "Add",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Sigmoid",
    "Mul",
    "LeakyRelu",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Resize",
    "Relu",
    "Clip",
    "QuickGelu",  # com.microsoft: SiLU written as one op (see fuse_silu)
}
FLOAT_COMPUTE_OPS = {"QuickGelu"}  # quantized around, but computed in float by ONNX Runtime (no QLinear form)
SAME_SCALE_OPS = {"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Resize"}
STEM_REASON = "stem (reads the image, feeds a float op): faster in float on ONNX Runtime CPU"
STEM_CHANNELS = 4  # input channels an int8 stem reads (pad_stem): 3 run at half speed in ONNX Runtime
SILU_MIN = -0.2785  # min of x * sigmoid(x), at x = -1.2785
# ops whose every input is data (the others read their data at input 0: shapes, scales, bounds after it)
ALL_DATA_INPUT_OPS = {"Concat", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min"}
RELU_OPS = {"Relu", "Clip"}  # removable when followed by QuantizeLinear with zero point 0


@dataclass
class LayerQuant:
    """Calibrated quantizers of one Conv/Linear layer (from ModelOpt's amax buffers)."""

    input_amax: float  # per-tensor activation range
    weight_amax: np.ndarray  # per output channel (shape [out]) or one value (shape [1])


@dataclass
class QuantParams:
    scale: float
    zero_point: int
    signed: bool  # int8 (True) or uint8 (False)


@dataclass
class QdqReport:
    target: str
    quantized_layers: list[str] = field(default_factory=list)  # Conv/Gemm with int8 weights
    float_layers: dict[str, str] = field(default_factory=dict)  # Conv/Gemm left in float -> why
    quantized_tensors: int = 0  # activations that got QuantizeLinear/DequantizeLinear
    silu_units: int = 0  # Sigmoid*Mul pairs written as one QuickGelu(alpha=1)
    gemm_layers: list[str] = field(default_factory=list)  # 1x1 Convs as MatMulIntegerToFloat (float out)
    nhwc_rewrites: list[str] = field(default_factory=list)  # float convs / pools feeding NHWC (quant.nhwc)
    padded_stems: list[str] = field(default_factory=list)  # int8 stems reading the image padded (pad_stem)
    silu_form: str | None = None  # quickgelu or qlinear where the graph has SiLU (optkit.quant.silu_form)
    silu_count: int = 0  # SiLUs in the graph, in whichever form
    silu_timing_ms: dict = field(default_factory=dict)  # form -> median ms, when both were timed
    silu_qlinear_speedup: float | None = None  # median paired quickgelu ms / qlinear ms, when timed
    silu_parity: dict = field(default_factory=dict)  # form -> worst max |Δ| / output scale, when checked
    silu_reason: str | None = None  # why silu_form was chosen (optkit.quant.silu_form.choose)
    unranged_tensors: list[str] = field(default_factory=list)  # would be quantized, but no range known
    float_tail_tensors: int = 0  # float_tail: tensors after the last quantized layers left float
    float_fed_tensors: int = 0  # tensors left float because a float layer reads them (_Graph.float_fed)
    # quantized layers writing float for a float layer after them: ONNX Runtime computes them in float
    # from their int8-rounded input and weights, or as int8 GEMMs writing float (1x1, gemm_layers)
    float_output_layers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def build_qdq(
    proto: onnx.ModelProto,
    layers: dict[str, LayerQuant],
    ranges: dict[str, tuple[float, float]],
    target: str,
    silu_unit: bool | None = None,
    float_stem: bool | None = None,
    float_tail: bool = False,
) -> tuple[onnx.ModelProto, QdqReport]:
    """The QDQ graph for `target`. `layers`: quantized layers by PyTorch module name (the Conv/Gemm
    whose weight initializer is `<name>.weight`); `ranges`: measured (min, max) by tensor name.
    `silu_unit`, `float_stem` (onnxruntime only): see fuse_silu and keep_stem_float; None chooses.
    `float_tail` (onnxruntime only): no Q/DQ after the last quantized layers (module docstring)."""
    import onnx

    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ConfigFieldsError(
            "INT8 export needs {opset} {least} or newer (per-channel QuantizeLinear)",
            ["opset"],
            least=MIN_OPSET,
        )
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    report = QdqReport(target)
    if target == "onnxruntime" and (silu_unit if silu_unit is not None else True):
        report.silu_units = fuse_silu(work)
    graph = _Graph(work)
    nodes = graph.layer_nodes(layers, report)
    if target == "onnxruntime" and (float_stem if float_stem is not None else graph.stem_feeds_float(nodes)):
        graph.keep_stem_float(nodes, layers, report)
    # A float layer reading a DequantizeLinear output would be run in int8 anyway: ONNX Runtime's
    # WeightBiasQuantization quantizes a float Conv/Gemm weight (per tensor) when its input comes from
    # DequantizeLinear. So float layers read the float tensor, as in the fake-quant model.
    floats = {i for i, n in enumerate(graph.nodes) if n.op_type in LAYER_OPS and i not in nodes}
    tail, fed, keep_float = set(), set(), set(floats)
    if target == "onnxruntime":
        tail = graph.tail_tensors(nodes) if float_tail else set()
        fed, fed_nodes = graph.float_fed(floats)
        keep_float |= fed_nodes
    report.float_tail_tensors, report.float_fed_tensors = len(tail), len(fed)
    gemms = graph.float_output_gemms(nodes, tail | fed) if target == "onnxruntime" else set()
    report.float_output_layers = [name for i, name in nodes.items() if graph.nodes[i].output[0] in fed]
    if target == "tensorrt":
        acts = _tensorrt_activations(graph, nodes, layers)
    elif target == "openvino":
        acts = _openvino_activations(graph, nodes, layers)
    else:
        layer_inputs = {graph.nodes[i].input[0] for i in nodes}  # int8 readers keep their pair
        unrounded = tail | (fed - layer_inputs)
        acts = _onnxruntime_activations(graph, nodes, layers, ranges, report, gemms, unrounded)
    convs = {i: name for i, name in nodes.items() if i not in gemms}
    graph.quantize_weights(convs, layers, acts if target == "onnxruntime" else None)
    gemm_inputs = {i: graph.nodes[i].input[0] for i in gemms}  # before the Q/DQ pairs rename them
    report.quantized_tensors = graph.insert_activation_qdq(acts, keep_float=keep_float)
    if target == "onnxruntime":
        report.padded_stems = [nodes[i] for i in convs if graph.pad_stem(i, nodes[i])]
    for i, x in gemm_inputs.items():
        graph.as_int8_gemm(i, x, nodes[i], layers[nodes[i]])
        report.gemm_layers.append(nodes[i])
    return graph.finish(report if target == "onnxruntime" else None), report


# --- rewrites of the float graph for ONNX Runtime's kernels ----------------------------------------


def fuse_silu(model: onnx.ModelProto) -> int:
    """Rewrite every SiLU (Sigmoid(x) feeding only Mul(x, ·)) as one `com.microsoft` QuickGelu with
    alpha=1 (x * sigmoid(alpha * x), the same function), in place; returns how many. Quantized as a unit
    (Q/DQ on x and on the product only), ONNX Runtime runs one op per SiLU instead of QLinearSigmoid +
    QLinearMul, and one rounding less happens (the sigmoid is no longer rounded to uint8)."""
    from onnx import helper

    g = model.graph
    users: dict[str, list] = {}
    for node in g.node:
        for t in node.input:
            users.setdefault(t, []).append(node)
    outputs = {o.name for o in g.output}
    dropped, replaced = set(), {}
    for node in g.node:
        if node.op_type != "Sigmoid" or node.domain not in ("", "ai.onnx"):
            continue
        x, sig = node.input[0], node.output[0]
        readers = users.get(sig, [])
        if sig in outputs or len(readers) != 1:
            continue
        mul = readers[0]
        if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or sorted(mul.input) != sorted((x, sig)):
            continue
        dropped.add(id(node))
        replaced[id(mul)] = helper.make_node(
            "QuickGelu", [x], list(mul.output), name=mul.name or f"{sig}_silu", domain=MS_DOMAIN, alpha=1.0
        )
    if replaced:
        nodes = [replaced.get(id(n), n) for n in g.node if id(n) not in dropped]
        del g.node[:]
        g.node.extend(nodes)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)


# --- which activations, with which parameters -----------------------------------------------------


def _tensorrt_activations(graph, nodes, layers) -> dict:
    """{(tensor, consumer index or None): params}: one int8 pair per quantized layer input."""
    acts = {}
    for i, name in nodes.items():
        tensor = graph.nodes[i].input[0]
        acts[(tensor, i)] = _symmetric_int8(layers[name].input_amax)
    return acts


def _openvino_activations(graph, nodes, layers) -> dict:
    """{(tensor, None): params}: symmetric int8 pairs for OpenVINO, each shared by all its tensor's readers.

    A quantized layer's input made by a Concat, Split, MaxPool or nearest Resize holds values of the
    tensors those read, so its pair moves up to them (rounding them with one scale rounds the output
    the same way): each producer then writes int8, and OpenVINO splits, pools, upsamples and joins int8
    tensors instead of rounding each joined tensor again (NNCF's unified scales). Tensors joined into one
    input share its scale, on the largest amax any of their readers needs."""
    needed: dict[str, float] = {}  # the tensor each quantized layer reads -> the largest amax asked
    for i, name in nodes.items():
        tensor = graph.nodes[i].input[0]
        needed[tensor] = max(needed.get(tensor, 0.0), layers[name].input_amax)
    group: dict[str, str] = {}  # union-find over source tensors: one scale per group

    def root(t: str) -> str:
        while group.setdefault(t, t) != t:
            t = group[t]
        return t

    amax_of: dict[str, float] = {}  # source tensor -> the largest amax among the inputs made of it
    for tensor, value in needed.items():
        sources = graph.copied_from(tensor)
        for source in sources:
            group[root(source)] = root(sources[0])
            amax_of[source] = max(amax_of.get(source, 0.0), value)
    shared: dict[str, float] = {}
    for source, value in amax_of.items():
        shared[root(source)] = max(shared.get(root(source), 0.0), value)
    return {(source, None): _symmetric_int8(shared[root(source)]) for source in amax_of}


def _onnxruntime_activations(graph, nodes, layers, ranges, report, gemms, tail=frozenset()) -> dict:
    """{(tensor, None): params}: one uint8 pair per tensor, shared by all its consumers (the outputs of
    `gemms`, which ONNX Runtime computes in float, and the `tail` tensors excepted)."""
    layer_amax: dict[str, float] = {}
    for i, name in nodes.items():
        tensor = graph.nodes[i].input[0]
        layer_amax[tensor] = max(layer_amax.get(tensor, 0.0), layers[name].input_amax)
    wanted = set(layer_amax)
    for i, node in enumerate(graph.nodes):
        if node.op_type in INT8_OPS:
            # a float-computed op's input is quantized only where its producer makes it int8 anyway
            # (a QLinear op's output): after a float stem a Q/DQ pair would just round the tensor twice
            if node.op_type not in FLOAT_COMPUTE_OPS:
                wanted.update(t for t in node.input if graph.is_activation(t))
            wanted.update(t for t in node.output if graph.is_activation(t))
        elif i in nodes and i not in gemms:
            wanted.update(t for t in node.output if graph.is_activation(t))  # so QLinearConv can form
    wanted -= graph.output_names
    wanted -= tail
    wanted -= {t for t in wanted if graph.only_feeds_relu(t)}  # the Relu's output carries the Q/DQ
    params: dict[str, QuantParams] = {}
    for tensor in graph.topological(wanted):
        p = _params_for(graph, tensor, layer_amax, ranges, params)
        if p is None:
            report.unranged_tensors.append(tensor)
        else:
            params[tensor] = p
    return {(t, None): p for t, p in params.items()}


def _params_for(graph, tensor, layer_amax, ranges, done) -> QuantParams | None:
    producer = graph.producer(tensor)
    if producer is not None and producer.op_type in SAME_SCALE_OPS and producer.input[0] in done:
        return done[producer.input[0]]
    concat = graph.only_feeds_concat(tensor)
    if concat is not None and (p := _params_for(graph, concat, layer_amax, ranges, done)) is not None:
        return p  # one grid for a Concat's inputs and output: ONNX Runtime copies instead of requantizing
    lo, hi = ranges.get(tensor, (None, None))
    nonneg = (producer is not None and producer.op_type in RELU_OPS) or (lo is not None and lo >= 0)
    if tensor in layer_amax:  # the calibrated (or QAT-trained) amax of the layer(s) reading it
        amax = layer_amax[tensor]
        if nonneg:
            hi = (
                amax
                if producer is None or producer.op_type != "Clip"
                else min(amax, graph.clip_max(producer))
            )
            return QuantParams(max(hi, 1e-12) / 255, 0, False)
        floor = graph.lower_bound(tensor)
        if floor is not None and -amax < floor < 0:  # e.g. SiLU >= -0.28: most of -amax..0 is unused
            return _uint8_range(floor, amax)
        return QuantParams(max(amax, 1e-12) / 127, 128, False)
    if lo is None:
        return None
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # the range must contain 0 (exact zero padding)
    silu_out = graph.only_feeds_silu(tensor)
    out = _params_for(graph, silu_out, layer_amax, ranges, done) if silu_out is not None else None
    if out is not None:  # no codes for inputs whose SiLU the output grid cannot tell apart
        lo, hi = max(lo, -silu_floor(out.scale)), min(hi, silu_inverse(out.scale * (255 - out.zero_point)))
    return _uint8_range(0.0 if nonneg else lo, hi)


def _uint8_range(lo: float, hi: float) -> QuantParams:
    """uint8 codes spread over [lo, hi] (lo <= 0 <= hi), 0.0 exactly representable."""
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zero_point = int(min(255, max(0, round(-lo / scale))))
    return QuantParams(scale, zero_point, False)


def silu_floor(out_scale: float) -> float:
    """The c > 1.28 at which |SiLU(-c)| = c * sigmoid(-c) falls to half an output step: SiLU maps every
    input below -c to within half a step of 0, so clipping its input there costs at most that, and the
    codes go to the range that matters (pre-SiLU conv outputs often reach -20 or lower)."""
    import math

    c = 1.2785  # SiLU's minimum; |SiLU(-c)| falls monotonically above it
    while c < 64 and c / (1 + math.exp(c)) > out_scale / 2:
        c *= 1.05
    return c


def silu_inverse(y: float) -> float:
    """The x >= 0 with SiLU(x) = x * sigmoid(x) = y (y >= 0): inputs above it give outputs above y, which
    the output's QuantizeLinear clips to its top code anyway, so the input range can stop there."""
    import math

    x = y
    for _ in range(60):  # x = y / sigmoid(x) converges from below: sigmoid(x) > 1/2 for x > 0
        x = y * (1 + math.exp(-x))
    return x


def _without_unread_nodes(nodes: list, graph_outputs: set[str]) -> list:
    """`nodes` less those whose outputs nothing reads (ONNX Runtime would still run them), e.g. the
    DequantizeLinear of a tensor read only by layers written as int8 GEMMs."""
    while True:
        read = {t for n in nodes for t in n.input} | graph_outputs
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _computes_in_float(node) -> bool:
    """Whether ONNX Runtime runs `node` in float even between Q/DQ (QuickGelu, HardSwish, ...)."""
    return node.op_type not in LAYER_OPS and (
        node.op_type not in INT8_OPS or node.op_type in FLOAT_COMPUTE_OPS
    )


def _qdq_names(tensor: str, *suffixes: str, index: int | None = None) -> list[str]:
    """Names of the Q/DQ pair of `tensor` and its parameters (index: the pair of one consumer)."""
    base = f"{tensor}_q{index}" if index is not None else f"{tensor}_q"
    return [base + suffix for suffix in suffixes]


def _is_nearest_resize(node) -> bool:
    modes = [a.s for a in node.attribute if a.name == "mode"]
    return node.op_type == "Resize" and modes in ([], [b"nearest"])  # nearest: the op's default


def _other(node, tensor: str) -> str:
    """The other input of a two-input node."""
    a, b = node.input
    return b if a == tensor else a


def _symmetric_int8(amax: float) -> QuantParams:
    return QuantParams(max(amax, 1e-12) / 127, 0, True)


def _weight_scale(weight_amax) -> np.ndarray:
    import numpy as np

    amax = np.asarray(weight_amax, dtype=np.float32).reshape(-1)
    return np.where(amax > 0, amax / 127, 1.0).astype(np.float32)  # an all-zero channel: any scale


def _quantized_weight(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 values (as float) of `w` on the per-output-channel (or per-tensor) grid `scale`."""
    import numpy as np

    shape = (-1,) + (1,) * (w.ndim - 1)
    return np.clip(np.round(w / scale.reshape(shape) if scale.size > 1 else w / scale[0]), -128, 127)


# --- the graph ------------------------------------------------------------------------------------


class _Graph:
    """The node list with producer/consumer maps, and the edits: weight DQ, activation Q/DQ pairs."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.inits = {t.name: t for t in g.initializer}
        self.output_names = {o.name for o in g.output}
        self.input_names = {i.name for i in g.input}
        self.producers = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.input:
                self.consumers.setdefault(t, []).append(i)
        self.new_inits: list = []
        self.head_nodes: list = []  # weight DequantizeLinear nodes, placed first
        self.after: dict[str, list] = {}  # tensor -> Q/DQ nodes placed right after its producer
        self.replaced: dict[int, list] = {}  # node index -> the nodes written in its place

    def is_activation(self, tensor: str) -> bool:
        return (
            bool(tensor)
            and tensor not in self.inits
            and (tensor in self.producers or tensor in self.input_names)
        )

    def producer(self, tensor: str):
        return self.producers.get(tensor)

    def only_feeds_relu(self, tensor: str) -> bool:
        users = self.consumers.get(tensor, [])
        return (
            bool(users)
            and all(self._is_relu(self.nodes[i]) for i in users)
            and tensor not in self.input_names
        )

    def only_feeds_silu(self, tensor: str) -> str | None:
        """The output of the one SiLU that reads `tensor` and nothing else does (QuickGelu, or the
        Sigmoid and Mul of the qlinear form)."""
        users = [self.nodes[i] for i in self.consumers.get(tensor, [])]
        if tensor in self.output_names:
            return None
        if len(users) == 1 and self.is_silu(users[0]):
            return users[0].output[0]
        muls = [n for n in users if self.is_silu(n)]
        if len(users) == 2 and len(muls) == 1 and self.producer(_other(muls[0], tensor)) in users:
            return muls[0].output[0]
        return None

    def only_feeds_concat(self, tensor: str) -> str | None:
        """The output of the one Concat that reads `tensor` when nothing else does."""
        users = {i for i in self.consumers.get(tensor, [])}
        if tensor in self.output_names or tensor in self.input_names or len(users) != 1:
            return None
        node = self.nodes[users.pop()]
        return (
            node.output[0] if node.op_type == "Concat" and node.output[0] not in self.output_names else None
        )

    def copied_from(self, tensor: str) -> list[str]:
        """The tensors whose values `tensor` is made of, where its producer only moves values around (a
        Concat of activations, Split, MaxPool, nearest Resize: rounding commutes with them), followed up
        to the ops that compute new values; [tensor] itself otherwise."""
        node = self.producer(tensor)
        if node is None or tensor in self.output_names:
            return [tensor]
        data = [t for t in node.input if self.is_activation(t)]
        if node.op_type == "Concat" and len(data) == len(node.input):
            inputs = data
        elif node.op_type in ("Split", "MaxPool") or _is_nearest_resize(node):
            inputs = [node.input[0]] if self.is_activation(node.input[0]) else []
        else:
            inputs = []
        if not inputs:
            return [tensor]
        return list(dict.fromkeys(s for t in inputs for s in self.copied_from(t)))

    def lower_bound(self, tensor: str) -> float | None:
        """The least value `tensor` can hold whatever the image, where the graph fixes one: SiLU outputs
        (-0.28), ReLU outputs (0), and what Concat, Add, MaxPool and reshapes make of such tensors."""
        node = self.producer(tensor)
        if node is None:
            return None
        if self.is_silu(node):
            return SILU_MIN
        if self._is_relu(node):
            return 0.0
        if node.op_type in ("Concat", "Add", "MaxPool") or node.op_type in SAME_SCALE_OPS:
            inputs = [t for t in node.input if self.is_activation(t)]
            bounds = [
                self.lower_bound(t) for t in (inputs if node.op_type in ("Concat", "Add") else inputs[:1])
            ]
            if not bounds or any(b is None for b in bounds):
                return None
            return sum(bounds) if node.op_type == "Add" else min(bounds)
        return None

    def is_silu(self, node) -> bool:
        """Whether `node` computes x * sigmoid(x): QuickGelu with alpha 1 (what fuse_silu writes), or
        Mul(x, Sigmoid(x)) (the qlinear form)."""
        if node.op_type == "QuickGelu":
            return next((a.f for a in node.attribute if a.name == "alpha"), 1.702) == 1.0  # op default 1.702
        if node.op_type != "Mul" or len(node.input) != 2:
            return False
        return any(
            (sig := self.producer(t)) is not None
            and sig.op_type == "Sigmoid"
            and sig.input[0] == _other(node, t)
            for t in node.input
        )

    def _is_relu(self, node) -> bool:
        return node.op_type == "Relu" or (node.op_type == "Clip" and self.clip_min(node) == 0.0)

    def clip_min(self, node) -> float | None:
        return self._clip_bound(node, 1)

    def clip_max(self, node) -> float:
        value = self._clip_bound(node, 2)
        return float("inf") if value is None else value

    def _clip_bound(self, node, index: int) -> float | None:
        from onnx import numpy_helper

        if len(node.input) > index and node.input[index] in self.inits:
            return float(numpy_helper.to_array(self.inits[node.input[index]]))
        return None

    def topological(self, tensors: set[str]) -> list[str]:
        order = [t for t in self.input_names if t in tensors]
        order += [o for n in self.nodes for o in n.output if o in tensors]
        return order

    def layer_nodes(self, layers: dict, report: QdqReport) -> dict[int, str]:
        """{node index: layer name} for the Conv/Gemm nodes of quantized layers; the others are reported."""
        found = {}
        for i, node in enumerate(self.nodes):
            if node.op_type not in LAYER_OPS or len(node.input) < 2:
                continue
            weight = node.input[1]
            name = weight[: -len(".weight")] if weight.endswith(".weight") else weight
            if name in layers and weight in self.inits:
                found[i] = name
                report.quantized_layers.append(name)
            else:
                report.float_layers[name] = "not quantized in the checkpoint (skipped)"
        missing = sorted(set(layers) - set(found.values()))
        if missing:
            raise ConfigError(
                f"the exported graph has no Conv/Gemm with weight '{missing[0]}.weight' "
                f"({len(missing)} quantized layer(s) not found); cannot place its quantizers"
            )
        return found

    def stem_feeds_float(self, nodes: dict[int, str]) -> bool:
        """Whether every stem output goes straight into an op ONNX Runtime computes in float (QuickGelu,
        HardSwish, ...): its int8 output would be dequantized at once, so int8 buys only the stem's small
        convolution (3 input channels) and costs quantizing the image and the largest activation.
        Measured (benchmarks/silu_remedy.py): faster in float for SiLU stems, much slower for ResNet's
        7x7 ReLU stem, whose uint8 output feeds MaxPool and the next QLinearConv."""
        stems = [i for i in nodes if self.nodes[i].input[0] in self.input_names]
        readers = [self.nodes[j] for i in stems for j in self.consumers.get(self.nodes[i].output[0], [])]
        return bool(readers) and all(_computes_in_float(n) for n in readers)

    def keep_stem_float(self, nodes: dict[int, str], layers: dict, report: QdqReport) -> None:
        """Leave the Conv(s) reading the graph input in float (removed from `nodes`), with the weights
        the fake-quant model uses (rounded to its int8 grid, stored as float), reading the image clipped
        where the fake-quant model's input quantizer clips it (clip_stem_input)."""
        import numpy as np
        from onnx import numpy_helper

        for i in [i for i in nodes if self.nodes[i].input[0] in self.input_names]:
            name = nodes.pop(i)
            self.clip_stem_input(i, name, layers[name].input_amax)
            weight = self.nodes[i].input[1]
            w = numpy_helper.to_array(self.inits[weight]).astype(np.float32)
            scale = _weight_scale(layers[name].weight_amax)
            q = _quantized_weight(w, scale).astype(np.float32)
            rounded = q * (scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.size > 1 else scale[0])
            self.inits[weight].CopyFrom(numpy_helper.from_array(rounded.astype(np.float32), weight))
            report.quantized_layers.remove(name)
            report.float_layers[name] = STEM_REASON

    def clip_stem_input(self, i: int, name: str, amax: float) -> None:
        """Node `i` (the float stem `name`) reads its input through Clip(-128, 127) * amax / 127: what the
        fake-quant model's int8 input quantizer saturates to (its rounding is left out: at most half a
        step, amax / 254, per pixel). One float pass over the image, the smallest activation."""
        import numpy as np
        from onnx import helper, numpy_helper

        node = self.nodes[i]
        x, step = node.input[0], max(amax, 1e-12) / 127
        low, high, clipped = f"{name}.input_clip_min", f"{name}.input_clip_max", f"{name}.input_clipped"
        self.new_inits.append(numpy_helper.from_array(np.array(-128 * step, np.float32), low))
        self.new_inits.append(numpy_helper.from_array(np.array(127 * step, np.float32), high))
        self.after.setdefault(x, []).append(helper.make_node("Clip", [x, low, high], [clipped], name=clipped))
        node.input[0] = clipped

    def pad_stem(self, i: int, name: str) -> bool:
        """Let int8 Conv `i` (layer `name`), when it reads the image's Q/DQ pair alone with fewer than
        STEM_CHANNELS channels, read that uint8 image padded with zero channels up to STEM_CHANNELS, and
        give its int8 weights zeros there: the sums are unchanged (whatever the padding, a zero weight
        multiplies it) and ONNX Runtime's int8 convolution runs faster (module docstring). Returns
        whether it did."""
        import numpy as np
        from onnx import helper, numpy_helper

        node = self.nodes[i]
        pair = next((self.after.get(t) for t in self.input_names if self.after.get(t)), None)
        if not pair or node.input[0] != pair[-1].output[0] or self._group(node) != 1:
            return False
        quantize, dequantize = pair[-2], pair[-1]
        if len([j for j, n in enumerate(self.nodes) if dequantize.output[0] in n.input]) != 1:
            return False
        weights = next(t for t in self.new_inits if t.name == name + ".weight_quantized")
        w = numpy_helper.to_array(weights)
        if w.ndim != 4 or w.shape[1] >= STEM_CHANNELS:
            return False
        padded_w = np.zeros((w.shape[0], STEM_CHANNELS, *w.shape[2:]), w.dtype)
        padded_w[:, : w.shape[1]] = w
        weights.CopyFrom(numpy_helper.from_array(padded_w, weights.name))
        pads, padded = f"{name}.input_pads", f"{name}.input_padded"
        extra = STEM_CHANNELS - w.shape[1]
        self.new_inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), pads))
        pad = helper.make_node("Pad", [quantize.output[0], pads, quantize.input[2]], [padded], name=padded)
        dequantize.input[0] = padded
        pair.insert(len(pair) - 1, pad)
        return True

    def _group(self, node) -> int:
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    def tail_tensors(self, nodes: dict[int, str]) -> set[str]:
        """The activations from which no quantized layer (`nodes`) is reached: what follows the last
        layers (a detector's decode), walked back from the graph outputs."""
        feeds_layer: dict[str, bool] = {}
        layer_inputs = {self.nodes[i].input[0] for i in nodes}
        for node in reversed(self.nodes):  # topological order: readers come after their producers
            for t in node.output:
                readers = [self.nodes[j] for j in self.consumers.get(t, [])]
                feeds_layer[t] = t in layer_inputs or any(
                    feeds_layer.get(o, False) for reader in readers for o in reader.output
                )
        return {t for t, feeds in feeds_layer.items() if not feeds and self.is_activation(t)}

    def float_fed(self, floats: set[int]) -> tuple[set[str], set[int]]:
        """What the float layers `floats` (skipped or stem) read unrounded in the fake-quant model, which
        rounds only quantized layers' inputs: each one's input and, back through the ops between, every
        tensor up to the outputs of the layers before it. The onnxruntime flavour would round all of
        them (conv outputs so that QLinearConv forms, Concat/Add/SiLU outputs); a float layer behind
        them would then see a tensor on a grid it was never calibrated for, e.g. one spread by an outlier
        channel that a skipped layer's own input quantizer was skipped to avoid. Returns (tensors, the
        non-layer nodes between: they read float too). The layers before run int8 on their inputs and
        write float (1x1: int8 GEMMs writing float, float_output_gemms)."""
        tensors: set[str] = set()
        between: set[int] = set()
        index = {id(n): i for i, n in enumerate(self.nodes)}
        todo = [self.nodes[i].input[0] for i in floats]
        while todo:
            t = todo.pop()
            if t in tensors or not self.is_activation(t) or t in self.input_names:
                continue
            tensors.add(t)
            producer = self.producer(t)
            if producer.op_type in LAYER_OPS:
                continue  # a layer's output: where the walk back stops
            between.add(index[id(producer)])
            todo.extend(producer.input if producer.op_type in ALL_DATA_INPUT_OPS else producer.input[:1])
        return tensors, between

    def float_output_gemms(self, nodes: dict[int, str], tail: set[str] = frozenset()) -> set[int]:
        """The quantized 1x1 Convs (stride 1, no padding, one group) whose output only feeds ops ONNX
        Runtime computes in float (QuickGelu, HardSwish), or is a `tail` tensor (left float). As
        QLinearConv they would write uint8 that a DequantizeLinear turns back into float at once (one
        more pass, single-threaded in ONNX Runtime 1.31, and one more rounding); as MatMulIntegerToFloat
        (as_int8_gemm) the same int8 GEMM writes float directly. Measured on yolo-cls-s @224 (20 such
        layers, 2 threads, side by side): 1.90 -> 1.76 ms; demo model ONNX SQNR vs fp32 31.9 -> 32.6 dB."""
        found = set()
        for i in nodes:
            node = self.nodes[i]
            if node.op_type != "Conv" or not self._is_pointwise(node):
                continue
            out = node.output[0]
            users = [self.nodes[j] for j in self.consumers.get(out, [])]
            if out in tail or (
                users and out not in self.output_names and all(_computes_in_float(u) for u in users)
            ):
                found.add(i)
        return found

    def _is_pointwise(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = self.inits.get(node.input[1])
        shape = list(weight.dims) if weight is not None else []
        return (
            len(shape) == 4
            and shape[2:] == [1, 1]
            and attrs.get("group", 1) == 1
            and all(v == 1 for v in attrs.get("strides", [1, 1]))
            and not any(attrs.get("pads", [0]))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in self.inits)
        )

    def as_int8_gemm(self, i: int, x: str, layer_name: str, layer: LayerQuant) -> None:
        """Write Conv node `i` (1x1, see float_output_gemms), which reads the quantized tensor `x`, as
        Transpose(NHWC) -> com.microsoft MatMulIntegerToFloat(uint8 input, int8 weights per output
        channel, float bias) -> Transpose(NCHW).
        ONNX Runtime runs its int8 convolutions in NHWC anyway, so its layout pass cancels the two
        Transposes against its own; what is left is one int8 GEMM with float output."""
        import numpy as np
        from onnx import helper, numpy_helper

        node = self.nodes[i]
        base = f"{node.name or node.output[0]}_gemm"
        weights = layer_name + ".weight"  # initializers named as the QLinearConv layers' are
        w = numpy_helper.to_array(self.inits[node.input[1]]).astype(np.float32)
        n_out = w.shape[0]
        scale = np.broadcast_to(_weight_scale(layer.weight_amax), (n_out,)).astype(np.float32)
        q = _quantized_weight(w, scale).astype(np.int8)[:, :, 0, 0].T  # [in, out]: x[..., in] @ w
        bias = np.zeros(n_out, np.float32)
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(self.inits[node.input[2]]).astype(np.float32)
        values = {
            weights + "_quantized": np.ascontiguousarray(q),
            weights + "_scale": scale,
            weights + "_zero_point": np.zeros(n_out, np.int8),
            layer_name + ".bias_float": bias,
        }
        for name, value in values.items():
            self.new_inits.append(numpy_helper.from_array(value, name))
        quantized, x_scale, x_zero_point = _qdq_names(x, "_quantized", "_scale", "_zero_point")
        w_q, w_scale, w_zero_point, b = values
        inputs = [base + "_nhwc", w_q, x_scale, w_scale, x_zero_point, w_zero_point, b]
        self.replaced[i] = [
            helper.make_node(
                "Transpose", [quantized], [base + "_nhwc"], name=base + "_nhwc", perm=[0, 2, 3, 1]
            ),
            helper.make_node("MatMulIntegerToFloat", inputs, [base + "_out"], name=base, domain=MS_DOMAIN),
            helper.make_node(
                "Transpose", [base + "_out"], list(node.output), name=base + "_nchw", perm=[0, 3, 1, 2]
            ),
        ]

    def quantize_weights(self, nodes: dict[int, str], layers: dict, acts: dict | None) -> None:
        """int8 weights behind DequantizeLinear; with `acts` (onnxruntime), int32 biases too."""
        import numpy as np
        from onnx import numpy_helper

        for i, name in nodes.items():
            node = self.nodes[i]
            w = numpy_helper.to_array(self.inits[node.input[1]]).astype(np.float32)
            scale = _weight_scale(layers[name].weight_amax)
            q = _quantized_weight(w, scale)
            node.input[1] = self._dequantized(
                name + ".weight", q.astype(np.int8), scale, np.zeros(scale.shape, np.int8), axis=0
            )
            if acts is not None and len(node.input) > 2 and node.input[2] in self.inits:
                act = acts.get((node.input[0], None))
                if act is not None:
                    node.input[2] = self._int32_bias(name, node.input[2], act.scale * scale)

    def _int32_bias(self, name: str, bias_name: str, scale) -> str:
        import numpy as np
        from onnx import numpy_helper

        b = numpy_helper.to_array(self.inits[bias_name]).astype(np.float64)
        scale = np.broadcast_to(np.asarray(scale, np.float64), b.shape)
        q = np.clip(np.round(b / scale), -(2**31), 2**31 - 1).astype(np.int32)
        return self._dequantized(
            name + ".bias", q, scale.astype(np.float32), np.zeros(b.shape, np.int32), axis=0
        )

    def _dequantized(self, base: str, q, scale, zero_point, axis: int) -> str:
        from onnx import helper, numpy_helper

        names = (base + "_quantized", base + "_scale", base + "_zero_point")
        per_axis = getattr(scale, "size", 1) > 1
        s = scale if per_axis else scale.reshape(())
        z = zero_point if per_axis else zero_point.reshape(())
        for name, value in zip(names, (q, s, z), strict=True):
            self.new_inits.append(numpy_helper.from_array(value, name))
        out = base + "_dequantized"
        kwargs = {"axis": axis} if per_axis else {}
        self.head_nodes.append(helper.make_node("DequantizeLinear", list(names), [out], name=out, **kwargs))
        return out

    def insert_activation_qdq(self, acts: dict, keep_float: set[int] = frozenset()) -> int:
        """A QuantizeLinear -> DequantizeLinear pair per entry; consumers read the dequantized tensor
        (all consumers but those in `keep_float` for (tensor, None), one consumer for (tensor, index))."""
        import numpy as np
        from onnx import helper, numpy_helper

        for n, ((tensor, consumer), p) in enumerate(acts.items()):
            suffixes = ("_scale", "_zero_point", "_quantized", "_dequantized")
            scale, zp, q, dq = _qdq_names(tensor, *suffixes, index=n if consumer is not None else None)
            dtype = np.int8 if p.signed else np.uint8
            self.new_inits.append(numpy_helper.from_array(np.array(p.scale, np.float32), scale))
            self.new_inits.append(numpy_helper.from_array(np.array(p.zero_point, dtype), zp))
            nodes = [
                helper.make_node("QuantizeLinear", [tensor, scale, zp], [q], name=q),
                helper.make_node("DequantizeLinear", [q, scale, zp], [dq], name=dq),
            ]
            self.after.setdefault(tensor, []).extend(nodes)
            if consumer is not None:
                users = [consumer]
            else:
                users = [i for i in self.consumers.get(tensor, []) if i not in keep_float]
            for i in users:
                node = self.nodes[i]
                for k, name in enumerate(node.input):
                    if name == tensor:
                        node.input[k] = dq
        return len(acts)

    def finish(self, nhwc_report: QdqReport | None = None) -> onnx.ModelProto:
        """The edited graph; with `nhwc_report` (onnxruntime), after optkit.quant.nhwc's layout rewrites,
        which are listed in it (and its quantized_tensors counted again)."""
        from onnx import helper

        from optkit.quant import nhwc

        g = self.model.graph
        ordered = list(self.head_nodes)
        for t in self.input_names:
            ordered += self.after.get(t, [])
        for i, node in enumerate(self.nodes):
            ordered += self.replaced.get(i, [node])
            for o in node.output:
                ordered += self.after.get(o, [])
        if nhwc_report is not None:
            inits = {t.name: t for t in [*g.initializer, *self.new_inits]}
            opset = max(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))
            ordered, nhwc_report.nhwc_rewrites = nhwc.rewrite(ordered, inits, self.output_names, opset)
        if not any(o.domain == MS_DOMAIN for o in self.model.opset_import) and any(
            n.domain == MS_DOMAIN for n in ordered
        ):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        ordered = _without_unread_nodes(ordered, self.output_names)
        if nhwc_report is not None:  # one QuantizeLinear per quantized tensor, as written
            nhwc_report.quantized_tensors = sum(n.op_type == "QuantizeLinear" for n in ordered)
        used = {t for n in ordered for t in n.input}
        # float weights replaced by int8 ones go, and the parameters of Q/DQ nodes rewritten away
        kept = [t for t in [*g.initializer, *self.new_inits] if t.name in used]
        del g.node[:]
        g.node.extend(ordered)
        del g.initializer[:]
        g.initializer.extend(kept)
        return self.model
