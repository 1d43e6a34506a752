"""qat: fine-tunes a calibrated checkpoint with fake quantization (and distillation), keeps it quantized
and exportable; int8 export and val through the CLI."""

from __future__ import annotations

import onnx
import pytest
import torch
from test_ptq import _float_ckpt, _ptq


@pytest.fixture
def int8_ckpt(tmp_path, tiny_data):
    src = _float_ckpt(tmp_path)
    _ptq(src, tiny_data, tmp_path / "q.pt", method="max")
    return tmp_path / "q.pt"


def test_qat_trains_the_quantized_model(cli, tmp_path, tiny_data, int8_ckpt):
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.quant.quantizers import quantize_entry, quantized_layers, quantizers

    args = ("--data", tiny_data, "--epochs", "2", "--batch-size", "16", "--workers", "0", "--lr0", "0.01")
    r = cli("qat", int8_ckpt, *args, "--distill", "--project", tmp_path / "runs", "--json")
    assert r.code == 0, r.err
    j = r.json()
    best = tmp_path / "runs" / "exp" / "weights" / "best.pt"
    assert j["best"] == str(best) and j["distill"] is True and j["epochs_run"] == 2
    assert {"float_top1", "ptq_top1", "qat_top1"} <= set(j) and 0 <= j["qat_top1"] <= 1
    before, after = load_checkpoint(int8_ckpt), load_checkpoint(best)
    assert quantize_entry(after.transforms)["amax_shapes"] == quantize_entry(before.transforms)["amax_shapes"]
    model = build_model(after)
    assert len(quantized_layers(model)) == 9
    # the weights moved, the calibrated ranges did not (amax is not trained)
    w0, w1 = before.model["model.0.conv.weight"], after.model["model.0.conv.weight"]
    assert not torch.equal(w0, w1)
    a0 = before.model["model.0.conv.input_quantizer._amax"]
    assert torch.equal(a0, quantizers(model)["model.0.conv.input_quantizer"].amax)


def test_distillation_changes_the_loss(tmp_path, tiny_data, int8_ckpt):
    from optkit.quant.qat import QatTrainer
    from optkit.train.config import TrainConfig

    losses = {}
    for distill in (False, True):
        cfg = TrainConfig(weights=str(int8_ckpt), data=str(tiny_data), epochs=1, batch_size=16, workers=0,
                          project=str(tmp_path / f"r{distill}"))  # fmt: skip
        trainer = QatTrainer(cfg, distill=distill, temperature=2.0)
        trainer.setup()
        images = torch.randn(4, 3, 32, 32)
        labels = torch.tensor([0, 1, 2, 0])
        with torch.no_grad():
            losses[distill] = trainer._loss(images, labels)[0].item()
        assert (trainer.teacher is not None) == distill
    assert losses[True] > losses[False] > 0  # CE + a positive KL term


def test_qat_refuses_float_checkpoint(cli, tmp_path, tiny_data):
    src = _float_ckpt(tmp_path)
    r = cli("qat", src, "--data", tiny_data, "--project", tmp_path / "runs")
    assert r.code == 1 and "is not quantized" in r.err and "ptq-calibrate" in r.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_export_int8_targets_and_val(cli, tmp_path, tiny_data, int8_ckpt, target):
    out = tmp_path / f"{target}.onnx"
    r = cli("export", int8_ckpt, "--int8-target", target, "--data", tiny_data, "-o", out, "--json")
    assert r.code == 0, r.err
    j = r.json()
    assert j["int8"]["target"] == target and j["val_top1_agreement"] >= 0.9
    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    act_type = onnx.TensorProto.UINT8 if target == "onnxruntime" else onnx.TensorProto.INT8
    assert zero_points and all(z.data_type == act_type for z in zero_points)
    if target == "tensorrt":
        assert all(onnx.numpy_helper.to_array(z) == 0 for z in zero_points)  # symmetric
    assert any(
        t.data_type == onnx.TensorProto.INT8 and t.name.endswith(".weight_quantized") for t in inits.values()
    )
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert target in meta["quantization"]
    v = cli("val", out, "--data", tiny_data, "--json", "--workers", "0")
    assert v.code == 0 and v.json()["images"] == 18


def test_int8_target_needs_quantized_checkpoint(cli, tmp_path):
    src = _float_ckpt(tmp_path)
    r = cli("export", src, "--int8-target", "onnxruntime")
    assert r.code == 1 and "needs a quantized checkpoint" in r.err
    assert not src.with_suffix(".onnx").exists()


def test_int8_export_beyond_tolerance_writes_nothing(cli, tmp_path, int8_ckpt):
    r = cli("export", int8_ckpt, "--atol", "1e-9", "-o", tmp_path / "x.onnx")
    assert r.code == 1 and "nothing written" in r.err and not (tmp_path / "x.onnx").exists()


def test_int8_silu_export_runs_other_batch_and_image_sizes(cli, tmp_path, tiny_data):
    """--dynamic: the onnxruntime flavour's int8 GEMMs and NHWC edges (optkit.quant.nhwc) hold for other
    batch sizes and image sizes: the export's parity check runs batch 4 and twice the size. Opset 18
    (ReduceMean's axes an input there; the other tests export at the default 17)."""
    src = _float_ckpt(tmp_path, "test-tiny", act="silu")
    _ptq(src, tiny_data, tmp_path / "q.pt", method="max")
    out = tmp_path / "d.onnx"
    r = cli(
        "export",
        tmp_path / "q.pt",
        "--dynamic",
        "--silu-form",
        "quickgelu",
        "--opset",
        "18",
        "-o",
        out,
        "--json",
    )
    assert r.code == 0, r.err
    j = r.json()
    assert len(j["int8"]["nhwc_rewrites"]) == 2 and j["int8"]["gemm_layers"]
    assert {tuple(c["shape"]) for c in j["cases"]} == {(1, 3, 32, 32), (4, 3, 32, 32), (1, 3, 64, 64)}
    assert all(c["max_rel"] <= j["atol"] for c in j["cases"])
