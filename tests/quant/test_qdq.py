"""INT8 QDQ graphs: uint8/int8 activations per target, int8 weights, ONNX Runtime's int8 coverage, the
SiLU unit (QuickGelu), the float stem, int8 GEMMs and NHWC edges of the onnxruntime flavour, skipped
layers, parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.models import create_model
from optkit.models.weight_init import randomize_bn
from optkit.onnxrt import create_session
from optkit.quant import silu_form
from optkit.quant.config import QuantConfig
from optkit.quant.onnx_export import ATOL_INT8
from optkit.quant.qdq import MS_DOMAIN, SILU_MIN, STEM_REASON, fuse_silu, silu_floor, silu_inverse
from optkit.stages.export import ExportConfig, export_checkpoint
from optkit.workflows.ptq import PtqRequest, run_ptq

CLASSES = ["blue", "green", "red"]
STEM = "model.0.conv"  # the Conv that reads the image in the tiny models
SKIPPED = "model.3.conv"  # a middle Conv (of both tiny models) kept float with --skip
# (model, act, skip): SiLU C3 blocks (Add, Concat); ReLU ResNet blocks (Add, MaxPool) and Hardswish (an
# activation without int8 kernel), each with a skipped layer
CASES = [
    ("test-tiny", "silu", ()),
    ("test-resnet", "relu", (SKIPPED,)),
    ("test-tiny", "hardswish", (SKIPPED,)),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from image_folders import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("qdq") / "colors", CLASSES, per_class=24)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}{'-skip' if c[2] else ''}")
def exported(request, data, tmp_path_factory):
    """The case PTQ-calibrated on the tiny images, exported for both targets: (case, ckpt, {target: ...})."""
    name, act, skip = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{act}")
    torch.manual_seed(0)
    model = randomize_bn(create_model(name, num_classes=len(CLASSES), act=act))
    pt = save_checkpoint(checkpoint_from_model(model, CLASSES, 32), folder / "f.pt")
    int8 = folder / "int8.pt"
    run_ptq(
        PtqRequest(
            str(pt),
            str(data),
            num_images=16,
            quant=QuantConfig(method="max", skip=list(skip)),
            output=str(int8),
        )
    )
    ckpt = load_checkpoint(int8)
    reports = {
        target: export_checkpoint(  # the SiLU form fixed: auto would time both (tested below)
            ckpt, folder / f"{target}.onnx", ExportConfig(int8_target=target, silu_form="quickgelu")
        )
        for target in ("onnxruntime", "tensorrt")
    }
    return request.param, ckpt, {t: (folder / f"{t}.onnx", r) for t, r in reports.items()}


def _float_stem(act: str) -> list[str]:
    """The stem is float where its output feeds a float op: SiLU (QuickGelu) and Hardswish, not ReLU."""
    return [] if act == "relu" else [STEM]


def _inits(graph) -> dict:
    return {t.name: t for t in graph.initializer}


def _activation_zero_points(graph) -> list:
    inits = _inits(graph)
    return [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]


def _conv_weights(graph) -> dict[str, str]:
    """{Conv/Gemm node (or a Conv written as an int8 GEMM or NHWC QLinearConv): its weight input} in the
    exported graph."""
    ops = {"Conv": 1, "Gemm": 1, "MatMulIntegerToFloat": 1, "QLinearConv": 3}
    return {n.name: n.input[ops[n.op_type]] for n in graph.node if n.op_type in ops}


def test_onnxruntime_graph_is_uint8_with_int8_weights(exported):
    (_, act, skip), _, files = exported
    path, report = files["onnxruntime"]
    graph = onnx.load(path).graph
    zero_points = _activation_zero_points(graph)
    assert zero_points and all(z.data_type == TensorProto.UINT8 for z in zero_points)
    assert len(zero_points) == report.int8["quantized_tensors"]  # one QuantizeLinear per tensor
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)
    inits = _inits(graph)
    quantized = report.int8["quantized_layers"]
    for layer in quantized:  # int8 weights behind DequantizeLinear, the float weight gone
        assert inits[f"{layer}.weight_quantized"].data_type == TensorProto.INT8
        assert f"{layer}.weight" not in inits
    # skipped layers, and the stem where it feeds a float op (SiLU, Hardswish), are float, named with why
    float_layers = report.int8["float_layers"]
    stem = _float_stem(act)
    assert set(float_layers) == {*stem, *skip}
    assert all(float_layers[s] == STEM_REASON for s in stem)
    assert not set(float_layers) & set(quantized)


def test_onnxruntime_coverage_every_other_conv_is_qlinear(exported):
    (_, act, skip), _, files = exported
    path, report = files["onnxruntime"]
    coverage = report.int8["coverage"]
    layers = len(_conv_weights(onnx.load(path).graph))
    assert len(report.int8["quantized_layers"]) == layers - len(_float_stem(act)) - len(skip)
    # a skipped layer reads the unrounded outputs of the layers before it (qdq._Graph.float_fed): those
    # that are not 1x1 int8 GEMMs writing float run in float in ONNX Runtime, the price of the skip
    before_skip = set(report.int8["float_output_layers"]) - set(report.int8["gemm_layers"])
    assert bool(report.int8["float_output_layers"]) == bool(skip)
    floats = len(_float_stem(act)) + len(skip) + len(before_skip)
    assert coverage["float_layers"] == floats
    assert coverage["int8_layers"] == layers - floats
    gemms = len(report.int8["gemm_layers"])  # 1x1 Convs into a float op: int8 GEMMs with float output
    assert coverage["int8_ops"]["QLinearConv"] == layers - 1 - floats - gemms  # the head's Gemm: QGemm
    assert coverage["int8_ops"].get("MatMulIntegerToFloat", 0) == gemms
    assert coverage["int8_ops"]["QGemm"] == 1


def test_silu_is_one_quickgelu_quantized_as_a_unit(exported):
    (_, act, _), ckpt, files = exported
    graph = onnx.load(files["onnxruntime"][0]).graph
    ops = [n.op_type for n in graph.node]
    silus = sum(isinstance(m, nn.SiLU) for m in build_model(ckpt).modules())
    report = files["onnxruntime"][1].int8
    if act == "silu":
        assert silus and ops.count("QuickGelu") == silus == report["silu_units"]
        assert "Sigmoid" not in ops and "Mul" not in ops
        quick = [n for n in graph.node if n.op_type == "QuickGelu"]
        assert all(n.domain == MS_DOMAIN and n.attribute[0].f == 1.0 for n in quick)
        producers = {o: n for n in graph.node for o in n.output}
        consumers = {i: n.op_type for n in graph.node for i in n.input}

        def through_transpose(node):  # the layout Transposes (optkit.quant.qdq and .nhwc) aside
            return producers[node.input[0]] if node.op_type == "Transpose" else node

        for n in quick:  # read from DequantizeLinear, an int8 GEMM, or a float layer (no needless Q/DQ)
            source = through_transpose(producers[n.input[0]])
            float_conv = source.op_type == "Conv" and source.input[1] in _inits(graph)  # a float weight
            assert source.op_type in ("DequantizeLinear", "MatMulIntegerToFloat") or float_conv
            assert consumers[n.output[0]] in ("QuantizeLinear", "ReduceMean")  # pooled in float (.nhwc)
        float_fed = [n for n in quick if through_transpose(producers[n.input[0]]).op_type == "Conv"]
        assert bool(float_fed) == bool(report["float_layers"])  # e.g. the float stem's SiLU
        assert report["coverage"]["float_ops"].get("Sigmoid", 0) == 0
    else:
        assert "QuickGelu" not in ops and report["silu_units"] == 0


def test_pointwise_convs_into_a_float_op_are_int8_gemms_with_float_output(exported):
    """A 1x1 Conv whose output only feeds a float op (QuickGelu, HardSwish) is MatMulIntegerToFloat on the
    uint8 input in NHWC: no QuantizeLinear/DequantizeLinear pair on its output; ONNX Runtime cancels the
    Transposes against its own NHWC layout; nothing in the graph is left computing unread values."""
    (_, act, _), _, files = exported
    path, report = files["onnxruntime"]
    graph = onnx.load(path).graph
    gemms = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert len(gemms) == len(report.int8["gemm_layers"])
    assert bool(gemms) == (act != "relu")  # a ReLU is folded into QLinearConv's uint8 output instead
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    inits = _inits(graph)
    for g in gemms:
        into = producers[g.input[0]]
        assert (
            g.domain == MS_DOMAIN
            and into.op_type == "Transpose"
            and list(into.attribute[0].ints) == [0, 2, 3, 1]
        )
        assert producers[into.input[0]].op_type == "QuantizeLinear"  # the uint8 tensor itself
        assert (
            inits[g.input[1]].data_type == TensorProto.INT8
            and inits[g.input[6]].data_type == TensorProto.FLOAT
        )
        (out,) = readers[g.output[0]]
        if out.op_type == "Transpose":
            assert list(out.attribute[0].ints) == [0, 3, 1, 2]
            assert {r.op_type for r in readers[out.output[0]]} <= {"QuickGelu", "HardSwish"}
        else:  # into the pool, all in NHWC (optkit.quant.nhwc)
            assert out.op_type in ("QuickGelu", "HardSwish")
            assert [r.op_type for r in readers[out.output[0]]] == ["ReduceMean"]
    outputs = {o.name for o in graph.output}
    assert all(o in readers or o in outputs for n in graph.node for o in n.output)  # no dead nodes
    ort_ops = report.int8["coverage"]
    transposes = ort_ops["int8_ops"].get("Transpose", 0) + ort_ops["float_ops"].get("Transpose", 0)
    assert not gemms or transposes < len(gemms)  # uncancelled, each GEMM would leave two (measured: 2, 4)


def test_float_stem_and_head_pool_hand_onnx_runtime_nhwc(exported):
    """Where a float stem feeds SiLU/HardSwish, the int8 convs reading it are NHWC QLinearConvs and the
    Transpose sits before the float op (ONNX Runtime folds it into the stem's own layout conversion); the
    head's pool runs on the int8 GEMM's NHWC output (optkit.quant.nhwc). ONNX Runtime's graph then keeps no
    Transpose of a full-size tensor: only the pooled [N, 1, 1, C] one, or none."""
    (_, act, skip), _, files = exported
    path, report = files["onnxruntime"]
    rewrites = report.int8["nhwc_rewrites"]
    if act == "relu":  # the int8 ReLU stem and QLinearConv outputs: nothing to rewrite
        assert rewrites == []
        return
    graph = onnx.load(path).graph
    producers = {o: n for n in graph.node for o in n.output}
    stems = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in _inits(graph)]  # float weight
    assert [n.name for n in stems][:1] == rewrites[:1]  # the float stem (a skipped layer reads int8: no)
    convs = [n for n in graph.node if n.op_type == "QLinearConv"]
    assert convs and all(n.domain == MS_DOMAIN for n in convs)
    assert all(a.i == 1 for n in convs for a in n.attribute if a.name == "channels_last")
    for conv in convs:  # QLinearConv <- QuantizeLinear <- the float op <- Transpose(NHWC) <- float Conv
        quantize = producers[conv.input[0]]
        float_op = producers[quantize.input[0]]
        transpose = producers[float_op.input[0]]
        assert quantize.op_type == "QuantizeLinear" and float_op.op_type in ("QuickGelu", "HardSwish")
        assert list(transpose.attribute[0].ints) == [0, 2, 3, 1] and producers[transpose.input[0]] in stems
    (mean,) = [n for n in graph.node if n.op_type == "ReduceMean"]
    assert mean.name == rewrites[1] and producers[producers[mean.input[0]].input[0]].op_type == (
        "MatMulIntegerToFloat"
    )
    assert "GlobalAveragePool" not in {n.op_type for n in graph.node}
    ort_ops = report.int8["coverage"]
    transposes = ort_ops["int8_ops"].get("Transpose", 0) + ort_ops["float_ops"].get("Transpose", 0)
    assert transposes <= 1 + 2 * len(skip)  # a skipped (float, NCHW) layer amid int8 ones costs two


def _unpadded(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its stem reading the 3-channel image directly again (Pad gone, weights sliced)."""
    g = model.graph
    (pad,) = [n for n in g.node if n.op_type == "Pad"]
    for n in g.node:
        n.input[:] = [pad.input[0] if t == pad.output[0] else t for t in n.input]
    g.node.remove(pad)
    w = _inits(g)[f"{STEM}.weight_quantized"]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[:, :3], w.name))
    return model


def test_int8_stem_reads_the_image_padded_to_four_channels_with_the_same_sums(exported, tmp_path):
    """An int8 stem (ReLU) reads the uint8 image padded with a zero channel and has zero weights there:
    ONNX Runtime computes exactly what the 3-channel graph computes (faster: optkit.quant.qdq)."""
    (_, act, _), _, files = exported
    path, report = files["onnxruntime"]
    graph = onnx.load(path).graph
    if act != "relu":  # a float stem reads the float image: nothing padded
        assert report.int8["padded_stems"] == [] and "Pad" not in {n.op_type for n in graph.node}
        return
    assert report.int8["padded_stems"] == [STEM]
    weights = numpy_helper.to_array(_inits(graph)[f"{STEM}.weight_quantized"])
    assert weights.shape[1] == 4 and not weights[:, 3].any()
    x = np.random.default_rng(3).normal(size=(1, 3, 32, 32)).astype(np.float32)
    padded = create_session(path, threads=1)
    onnx.save(_unpadded(onnx.load(path)), tmp_path / "unpadded.onnx")
    plain = create_session(tmp_path / "unpadded.onnx", threads=1)
    name = padded.get_inputs()[0].name
    np.testing.assert_array_equal(padded.run(None, {name: x})[0], plain.run(None, {name: x})[0])


def test_both_flavours_count_the_same_params_and_flops(exported):
    """optkit profile/benchmark count an INT8 graph like its float layers, int8 GEMMs included."""
    from optkit.measure.onnx_flops import count_graph

    _, _, files = exported
    counts = [count_graph(onnx.load(files[t][0]), [1, 3, 32, 32]) for t in ("tensorrt", "onnxruntime")]
    assert counts[0].params == counts[1].params > 0 and counts[0].macs == counts[1].macs > 0


def _silu(x: float) -> float:
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("scale", [1e-4, 0.003, 0.02, 0.1, 0.5])
def test_silu_range_limits(scale):
    c = silu_floor(scale)  # below -c, SiLU is within half an output step of 0
    assert abs(_silu(-c)) <= scale / 2 and abs(_silu(-c / 1.06)) > scale / 2  # and not much lower
    assert all(abs(_silu(x)) <= scale / 2 for x in np.linspace(-c - 50, -c, 200))
    for y in (scale, 1.0, 7.5, 40.0):
        assert _silu(silu_inverse(y)) == pytest.approx(y, rel=1e-9)
    assert min(_silu(x) for x in np.linspace(-3, 0, 30001)) == pytest.approx(SILU_MIN, abs=1e-4)


def test_silu_grids_spend_no_codes_on_unreachable_values(exported):
    """SiLU output (a Conv input): uint8 from SiLU's minimum (-0.28), not from -amax, so about twice the
    fake-quant resolution; SiLU input: clipped where SiLU is ~0 below and where the output grid ends above."""
    (_, act, _), _, files = exported
    if act != "silu":
        pytest.skip("no SiLU in this case")
    graph = onnx.load(files["onnxruntime"][0]).graph
    inits = _inits(graph)
    q_of = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}  # by the float tensor
    producer = {n.output[0]: n for n in graph.node}

    def grid(tensor):  # (scale, zero point, lowest value, highest value) of its QuantizeLinear
        q = q_of[tensor]
        s, z = (float(numpy_helper.to_array(inits[t])) for t in q.input[1:3])
        return s, z, -z * s, (255 - z) * s

    readers: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    checked = 0
    for node in (n for n in graph.node if n.op_type == "QuickGelu"):
        if node.output[0] not in q_of:  # the head's, pooled in float
            continue
        s_out, _, lo_out, hi_out = grid(node.output[0])
        dqs = [n for n in readers[q_of[node.output[0]].output[0]] if n.op_type == "DequantizeLinear"]
        dq_readers = [r for dq in dqs for r in readers[dq.output[0]]]
        reader = dq_readers[0] if len(dq_readers) == 1 else None  # (int8 GEMMs read the uint8 tensor)
        if reader is not None and reader.op_type == "Concat":  # on the Concat's grid (the test below)
            assert grid(node.output[0]) == grid(reader.output[0])
        else:
            assert SILU_MIN - s_out <= lo_out <= 0  # from SiLU's minimum (or the measured one) up
        x = node.input[0]
        if producer[x].op_type == "DequantizeLinear":  # an int8 producer: its grid is the clipped range
            s_in, z_in = (float(numpy_helper.to_array(inits[t])) for t in producer[x].input[1:3])
            lo_in, hi_in = -z_in * s_in, (255 - z_in) * s_in
            assert lo_in >= -silu_floor(s_out) - s_in and hi_in <= silu_inverse(hi_out) + s_in
            checked += 1
    assert checked
    # Concat of SiLU outputs and of residual Adds of two SiLU outputs: bounded below by 2 x -0.28
    concats = [n for n in graph.node if n.op_type == "Concat"]
    assert concats and all(grid(n.output[0])[2] >= 2 * SILU_MIN - grid(n.output[0])[0] for n in concats)


def test_tensorrt_graph_is_symmetric_int8_and_plain_onnx(exported):
    (_, _, skip), _, files = exported
    path, report = files["tensorrt"]
    model = onnx.load(path)
    zero_points = _activation_zero_points(model.graph)
    assert zero_points and all(z.data_type == TensorProto.INT8 for z in zero_points)
    assert all(not numpy_helper.to_array(z).any() for z in zero_points)  # zero point 0
    assert not any(n.op_type == "QuickGelu" for n in model.graph.node)
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)  # no contrib ops for TensorRT
    assert set(report.int8["float_layers"]) == set(skip)  # the stem is int8 for TensorRT
    inits = _inits(model.graph)
    assert all(
        inits[f"{n}.weight_quantized"].data_type == TensorProto.INT8 for n in report.int8["quantized_layers"]
    )


def test_skipped_layer_stays_a_float_conv(exported):
    (_, _, skip), _, files = exported
    if not skip:
        pytest.skip("no layer skipped in this case")
    for target, (path, report) in files.items():
        graph = onnx.load(path).graph
        inits = _inits(graph)
        weights = list(_conv_weights(graph).values())
        assert f"{SKIPPED}.weight" in weights, target  # a Conv reads the float initializer directly
        assert inits[f"{SKIPPED}.weight"].data_type == TensorProto.FLOAT
        assert "skipped" in report.int8["float_layers"][SKIPPED]
    # ONNX Runtime quantizes a float Conv's weights itself when its input comes from DequantizeLinear:
    # the skipped layer must still be a float Conv after ONNX Runtime's optimizations
    coverage = files["onnxruntime"][1].int8["coverage"]
    assert any("/model.3/conv/" in name for name in coverage["float_layer_names"])


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_ort_agrees_with_the_fake_quant_model(exported, target):
    _, ckpt, files = exported
    model = build_model(ckpt).eval()
    session = create_session(files[target][0], threads=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
    name = session.get_inputs()[0].name  # a static batch of 1
    got = torch.cat([torch.from_numpy(session.run(None, {name: x[i : i + 1].numpy()})[0]) for i in range(4)])
    assert ((ref - got).abs().max() / ref.abs().max()).item() <= ATOL_INT8[target]
    assert (ref.argmax(1) == got.argmax(1)).float().mean().item() >= 0.75


def _silu_graph(extra_reader: bool) -> onnx.ModelProto:
    """x -> Sigmoid -> Mul(x, s) -> y (and optionally s is also a graph output)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], outputs
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_fuse_silu_computes_silu_and_leaves_a_shared_sigmoid_alone():
    import onnxruntime as ort

    model = _silu_graph(extra_reader=False)
    assert fuse_silu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QuickGelu"]
    x = np.linspace(-6, 6, 4, dtype=np.float32).reshape(1, 4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    shared = _silu_graph(extra_reader=True)  # the sigmoid is an output too: not a SiLU to rewrite
    assert fuse_silu(shared) == 0 and [n.op_type for n in shared.graph.node] == ["Sigmoid", "Mul"]


def _block_graph() -> onnx.ModelProto:
    """x -> Conv a -> SiLU -> sa;  x -> Conv b -> SiLU -> sb;  Concat(sa, sa + sb) -> Conv c -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), f"{n}.weight")
             for n, s in (("a", (4, 4, 3, 3)), ("b", (4, 4, 3, 3)), ("c", (2, 8, 1, 1)))]  # fmt: skip
    nodes = [  # 3x3 Convs a and b: QLinearConv with an output grid (1x1 ones would be int8 GEMMs)
        helper.make_node("Conv", ["x", "a.weight"], ["ya"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["ya"], ["ga"]),
        helper.make_node("Mul", ["ya", "ga"], ["sa"]),
        helper.make_node("Conv", ["x", "b.weight"], ["yb"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["yb"], ["gb"]),
        helper.make_node("Mul", ["yb", "gb"], ["sb"]),
        helper.make_node("Add", ["sa", "sb"], ["r"]),
        helper.make_node("Concat", ["sa", "r"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "c.weight"], ["y"]),
    ]
    return _x_to_y_model(nodes, inits, "block", x_channels=4)


def _x_to_y_model(nodes, inits, name: str, x_channels: int) -> onnx.ModelProto:
    """An opset-17 model of `nodes` from input x [1, x_channels, 4, 4] to output y [1, 2, 4, 4]."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, x_channels, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("silu_unit", [True, False], ids=["quickgelu", "qlinear"])
def test_silu_lower_bounds_carry_through_add_and_concat(silu_unit):
    """With wide measured ranges and a large calibrated amax, the grids still start where the graph says
    values can start: Conv c's input at 2 x SiLU's minimum (Concat of a SiLU and a sum of two)."""
    from optkit.quant.qdq import LayerQuant, build_qdq

    sizes = (("a", 4.0, 4), ("b", 4.0, 4), ("c", 6.0, 2))  # (layer, input amax, output channels)
    layers = {n: LayerQuant(amax, np.ones(c, np.float32)) for n, amax, c in sizes}
    ranges = {"x": (-4.0, 4.0), "ya": (-20.0, 15.0), "yb": (-20.0, 15.0), "sa": (-0.27, 15.0),
              "sb": (-0.27, 15.0), "r": (-0.5, 30.0), "cat": (-0.5, 30.0), "y": (-50.0, 50.0)}  # fmt: skip
    model, _ = build_qdq(_block_graph(), layers, ranges, "onnxruntime", silu_unit=silu_unit, float_stem=False)
    assert ("QuickGelu" in [n.op_type for n in model.graph.node]) == silu_unit
    inits = _inits(model.graph)
    grids = {}
    for n in (n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in ranges):
        s, z = (float(numpy_helper.to_array(inits[t])) for t in n.input[1:3])
        grids[n.input[0]] = (-z * s, (255 - z) * s, s)
    lo, hi, s = grids["cat"]  # a Conv input: calibrated top, bounded bottom (not -6.0)
    assert lo == pytest.approx(2 * SILU_MIN, abs=s) and hi == pytest.approx(6.0, abs=s)
    out_step = grids["sa"][2]  # Conv a's output: clipped where SiLU(sa) cannot tell values apart
    assert grids["ya"][0] == pytest.approx(-silu_floor(out_step), abs=grids["ya"][2])
    assert grids["ya"][1] == pytest.approx(silu_inverse(grids["sa"][1]), abs=grids["ya"][2])
    assert grids["ya"][1] - grids["ya"][0] < 0.75 * 35.0  # well inside the measured -20..15


def test_a_tensor_read_only_by_concat_takes_the_concat_grid():
    """The Add output r feeds only the Concat: it is quantized once, on the Concat's (Conv c's input) grid,
    which lets ONNX Runtime's QLinearConcat copy it; sa also feeds the Add and keeps its own grid."""
    from optkit.quant.qdq import LayerQuant, build_qdq

    layers = {n: LayerQuant(4.0, np.ones(c, np.float32)) for n, c in (("a", 4), ("b", 4), ("c", 2))}
    ranges = {"x": (-4.0, 4.0), "ya": (-5.0, 5.0), "yb": (-5.0, 5.0), "sa": (-0.27, 2.0),
              "sb": (-0.27, 2.0), "r": (-0.5, 3.0), "cat": (-0.5, 3.0), "y": (-9.0, 9.0)}  # fmt: skip
    model, _ = build_qdq(_block_graph(), layers, ranges, "onnxruntime", float_stem=False)
    inits = _inits(model.graph)
    grid = {
        n.input[0]: tuple(float(numpy_helper.to_array(inits[t])) for t in n.input[1:3])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in ranges
    }
    assert grid["r"] == grid["cat"] and grid["sa"] != grid["cat"]
    assert grid["cat"][0] == pytest.approx((4.0 - 2 * SILU_MIN) / 255)  # calibrated 4.0 down to 2 x -0.28
    cat = next(n for n in model.graph.node if n.op_type == "Concat")
    readers = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert [readers.get(t) for t in cat.input] == ["sa_q_quantized", "r_q_quantized"]


def test_silu_form_qlinear_and_auto(exported, tmp_path):
    """qlinear: SiLU as Sigmoid and Mul between Q/DQ (ONNX Runtime's QLinearSigmoid + QLinearMul), stem int8;
    auto: both graphs checked and (both passing) timed on this machine; qlinear only when more than
    silu_form.MARGIN faster (the choice itself: tests/quant/test_silu_choice.py)."""
    (_, act, _), ckpt, _ = exported
    if act != "silu":
        pytest.skip("no SiLU in this case")
    qlinear = export_checkpoint(
        ckpt, tmp_path / "q.onnx", ExportConfig(int8_target="onnxruntime", silu_form="qlinear")
    )
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert (
        "QuickGelu" not in ops and ops.count("Sigmoid") == ops.count("Mul") == qlinear.int8["silu_count"] > 0
    )
    assert qlinear.int8["silu_form"] == "qlinear" and not qlinear.int8["silu_timing_ms"]
    assert qlinear.int8["coverage"]["int8_ops"].get("QLinearSigmoid") == qlinear.int8["silu_count"]
    assert STEM not in qlinear.int8["float_layers"]  # its output feeds int8 ops now
    auto = export_checkpoint(ckpt, tmp_path / "a.onnx", ExportConfig(int8_target="onnxruntime"))
    timing, speedup = auto.int8["silu_timing_ms"], auto.int8["silu_qlinear_speedup"]
    assert set(timing) == {"quickgelu", "qlinear"} and all(ms > 0 for ms in timing.values())
    assert set(auto.int8["silu_parity"]) == {"quickgelu", "qlinear"}
    assert auto.int8["silu_form"] == ("qlinear" if speedup > 1 + silu_form.MARGIN else "quickgelu")
    ops = [n.op_type for n in onnx.load(tmp_path / "a.onnx").graph.node]
    assert ("QuickGelu" in ops) == (auto.int8["silu_form"] == "quickgelu")


def test_silu_form_is_checked(cli, tmp_path):
    r = cli("export", "yolo-cls-n", "--silu-form", "fast")
    assert (
        r.code == 1
        and r.err.strip() == "error: --silu-form must be one of auto, quickgelu, qlinear, got 'fast'"
    )


def _c2f_graph() -> onnx.ModelProto:
    """A C2f block's shape: x -> Conv a -> s; Split(s) -> (s1, s2); s2 -> Conv b -> t; r = s2 + t;
    Concat(s1, s2, r) -> Conv c -> y, and x also read by Conv d -> z (two readers of x)."""
    rng = np.random.default_rng(0)
    shapes = (("a", (4, 4, 3, 3)), ("b", (2, 2, 3, 3)), ("c", (2, 6, 1, 1)), ("d", (2, 4, 1, 1)))
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), f"{n}.weight") for n, s in shapes]
    inits.append(numpy_helper.from_array(np.array([2, 2], np.int64), "halves"))
    nodes = [
        helper.make_node("Conv", ["x", "a.weight"], ["s"], pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["s", "halves"], ["s1", "s2"], axis=1),
        helper.make_node("Conv", ["s2", "b.weight"], ["t"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["s2", "t"], ["r"]),
        helper.make_node("Concat", ["s1", "s2", "r"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "c.weight"], ["y"]),
        helper.make_node("Conv", ["x", "d.weight"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "c2f",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4, 4]) for n in ("y", "z")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_openvino_flavour_shares_one_pair_per_tensor_and_rounds_what_a_concat_joins():
    """The openvino flavour: x, read by Conv a (amax 3) and Conv d (amax 5), gets one pair on amax 5 that
    both read. Conv c reads Concat(s1, s2, r): s1 and s2 are parts of Conv a's output s (a Split), r is the
    residual Add's output; the Concat's pair moves up to s and r, which share its scale (amax 6, the
    largest asked of them: Conv b's 2 for s2 too), so Conv a and the Add write int8 and the Split and
    the Concat move int8 values (NNCF's unified scales). The tensorrt flavour keeps one pair per reader,
    on its own amax. (Parity of real models: test_openvino_matrix.)"""
    from optkit.quant.qdq import LayerQuant, build_qdq

    amaxes = {"a": 3.0, "b": 2.0, "c": 6.0, "d": 5.0}
    channels = {"a": 4, "b": 2, "c": 2, "d": 2}
    layers = {n: LayerQuant(amaxes[n], np.full(channels[n], 8.0, np.float32)) for n in amaxes}
    scales = {}
    for target in ("openvino", "tensorrt"):
        model, _ = build_qdq(_c2f_graph(), layers, {}, target)
        inits = _inits(model.graph)
        quantized = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        scales[target] = sorted(
            (n.input[0], float(numpy_helper.to_array(inits[n.input[1]])))
            for n in quantized
            if n.input[0] in "x s s2 r cat".split()
        )
        if target == "openvino":
            readers = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
            by_op = {n.op_type: n for n in model.graph.node}
            assert readers.get(by_op["Split"].input[0]) == "s_q_quantized"  # the Split reads the rounded s
            assert by_op["Add"].input[0] == "s2"  # a part of the rounded tensor
            assert [readers.get(t) for t in by_op["Concat"].input] == [None, None, "r_q_quantized"]
            assert by_op["Conv"].input[0] in readers  # Conv a reads x rounded
            conv_c = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1].startswith("c."))
            assert conv_c.input[0] == "cat"  # joined int8 values: no second rounding

    def named(pairs):
        return [(name, pytest.approx(scale, rel=1e-6)) for name, scale in pairs]

    assert scales["openvino"] == named([("r", 6.0 / 127), ("s", 6.0 / 127), ("x", 5.0 / 127)])
    assert scales["tensorrt"] == named([("cat", 6 / 127), ("s2", 2 / 127), ("x", 3 / 127), ("x", 5 / 127)])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_openvino_flavour_rounds_before_maxpool_and_nearest_upsample(mode):
    """SPPF and the neck's shapes: Conv c reads Concat(s, MaxPool(s), Resize(s)). Rounding commutes with
    max pooling and nearest upsampling, so the one pair sits on s; a linear Resize computes new values, so
    its output keeps a pair of its own (on the same scale: one Concat joins them)."""
    from optkit.quant.qdq import LayerQuant, build_qdq

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, 2, 1, 1)).astype(np.float32), "a.weight"),
        numpy_helper.from_array(rng.normal(size=(2, 6, 1, 1)).astype(np.float32), "c.weight"),
        numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "same_size"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "a.weight"], ["s"]),
        helper.make_node("MaxPool", ["s"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["s", "", "same_size"], ["u"], mode=mode),
        helper.make_node("Concat", ["s", "m", "u"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "c.weight"], ["y"]),
    ]
    model = _x_to_y_model(nodes, inits, "sppf", x_channels=2)
    layers = {
        "a": LayerQuant(1.0, np.full(2, 8.0, np.float32)),
        "c": LayerQuant(4.0, np.full(2, 8.0, np.float32)),
    }
    out, _ = build_qdq(model, layers, {}, "openvino")
    inits = _inits(out.graph)
    pairs = sorted(
        (n.input[0], float(numpy_helper.to_array(inits[n.input[1]])))
        for n in out.graph.node
        if n.op_type == "QuantizeLinear"
    )
    joined = [("s", pytest.approx(4 / 127))] + ([("u", pytest.approx(4 / 127))] if mode == "linear" else [])
    assert pairs == sorted([("x", pytest.approx(1 / 127)), *joined], key=lambda p: p[0])
