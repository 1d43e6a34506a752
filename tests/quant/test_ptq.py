"""ptq-calibrate: every method, safe reload to identical outputs, --skip, sensitivity, auto-skip, CLI."""

from __future__ import annotations

import pytest
import torch

CLASSES = ["blue", "green", "red"]


def _float_ckpt(folder, name="test-resnet", **kwargs):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **kwargs)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics, so folding changes the weights
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32), folder / "float.pt")


def _ptq(src, data, out, **quant):
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    request = PtqRequest(str(src), str(data), num_images=24, quant=QuantConfig(**quant), output=str(out))
    return run_ptq(request)


@pytest.mark.parametrize("method", ["max", "percentile", "entropy", "mse", "mean-max"])
def test_every_method_calibrates_and_reloads_safely(tmp_path, tiny_data, method):
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.quant.quantizers import is_quantized, quantization_off, quantized_layers, quantizers

    src = _float_ckpt(tmp_path)
    r = _ptq(src, tiny_data, tmp_path / "q.pt", method=method)
    assert r["quantized_layers"] == 9 and r["num_images"] == 24 and r["method"] == method
    assert 0 <= r["int8_top1"] <= 1 and 0 <= r["top1_agreement"] <= 1 and r["sqnr_db"] > 10
    raw = torch.load(tmp_path / "q.pt", map_location="cpu", weights_only=True)  # no pickled modules
    assert any(k.endswith("input_quantizer._amax") for k in raw["model"])
    a, b = build_model(load_checkpoint(tmp_path / "q.pt")), build_model(load_checkpoint(tmp_path / "q.pt"))
    assert is_quantized(a) and len(quantized_layers(a)) == 9
    amax = [q.amax for q in quantizers(a).values()]
    assert all(torch.isfinite(x).all() and (x > 0).all() for x in amax)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, b(x))
        with quantization_off(a):
            assert not torch.equal(a(x), out)  # fake quantization is really in the loop


def test_methods_choose_different_ranges(tmp_path, tiny_data):
    from optkit.checkpoint import load_checkpoint

    src = _float_ckpt(tmp_path)
    amax = {}
    for method in ("max", "percentile", "mse"):
        _ptq(src, tiny_data, tmp_path / f"{method}.pt", method=method, percentile=99.0)
        state = load_checkpoint(tmp_path / f"{method}.pt").model
        amax[method] = state["model.2.cv1.conv.input_quantizer._amax"].item()
    assert amax["percentile"] < amax["max"] and amax["mse"] < amax["max"]  # both clip outliers


def test_mean_max_averages_each_images_range():
    """mean-max (NNCF's default activation range): the larger of -mean(per-image min) and mean(per-image
    max) over every image of every calibration batch, whatever the batches' sizes; weights keep max."""
    from torch import nn

    from optkit.quant.config import QuantConfig
    from optkit.quant.quantizers import calibrate, insert_quantizers

    model = insert_quantizers(nn.Sequential(nn.Conv2d(1, 2, 1)), QuantConfig(method="mean-max"))
    images = torch.zeros(5, 1, 2, 2)
    for i, (low, high) in enumerate([(-1, 2), (-3, 4), (0, 9), (-20, 1), (-1, 0.5)]):
        images[i, 0, 0, 0], images[i, 0, 1, 1] = low, high
    calibrate(model, lambda m: [m(images[:2]), m(images[2:])], "mean-max")
    lows, highs = images.flatten(1).amin(1), images.flatten(1).amax(1)
    assert lows.mean() == pytest.approx(-5.0) and highs.mean() == pytest.approx(3.3)
    assert model[0].input_quantizer.amax.item() == pytest.approx(5.0)  # -mean(min) is the larger
    weight = model[0].weight.detach().abs().flatten(1).amax(1)
    assert torch.allclose(model[0].weight_quantizer.amax.flatten(), weight)


def test_skip_keeps_layers_float(tmp_path, tiny_data):
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.quant.quantizers import quantized_layers

    src = _float_ckpt(tmp_path)
    r = _ptq(src, tiny_data, tmp_path / "q.pt", skip=["model.0.conv"])
    model = build_model(load_checkpoint(tmp_path / "q.pt"))
    assert "model.0.conv" not in quantized_layers(model) and r["quantized_layers"] == 8
    assert r["skipped"] == ["model.0.conv"]


def test_fuses_first_and_records_lineage(tmp_path, tiny_data):
    from optkit.checkpoint import load_checkpoint

    src = _float_ckpt(tmp_path)
    _ptq(src, tiny_data, tmp_path / "q.pt")
    ckpt = load_checkpoint(tmp_path / "q.pt")
    assert [t["kind"] for t in ckpt.transforms] == ["fuse", "quantize"]
    assert not any("bn" in k for k in ckpt.model)  # BN folded before quantizers went in
    assert ckpt.lineage[-1]["stage"] == "ptq-calibrate" and "int8_top1" in ckpt.lineage[-1]["metrics"]
    assert ckpt.transforms[-1]["onnx_ranges"]  # measured for the onnxruntime INT8 flavour
    # the float graph's tensors are named as the export names them: the classifier's output is "logits"
    ranges = ckpt.transforms[-1]["onnx_ranges"]
    assert "logits" in ranges and "output0" not in ranges


def test_sensitivity_and_auto_skip(tmp_path, tiny_data):
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    src = _float_ckpt(tmp_path)
    request = PtqRequest(
        str(src), str(tiny_data), num_images=24, quant=QuantConfig(), sensitivity=True, auto_skip=0.0,
        output=str(tmp_path / "q.pt"),
    )  # fmt: skip
    r = run_ptq(request)
    rows = r["sensitivity"]
    assert len(rows) == 9 and [row["sqnr_db"] for row in rows] == sorted(row["sqnr_db"] for row in rows)
    # auto-skip 0 pp: layers go float, most sensitive first, until no top-1 is lost
    assert r["auto_skipped"] == [row["layer"] for row in rows[: len(r["auto_skipped"])]]
    assert r["int8_top1"] >= r["float_top1"]
    assert r["quantized_layers"] == 9 - len(r["auto_skipped"])


def test_sensitivity_top1_metric(tmp_path, tiny_data):
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    src = _float_ckpt(tmp_path)
    request = PtqRequest(
        str(src), str(tiny_data), num_images=24, quant=QuantConfig(), sensitivity=True,
        sensitivity_metric="top1", output=str(tmp_path / "q.pt"),
    )  # fmt: skip
    rows = run_ptq(request)["sensitivity"]
    assert [row["top1"] for row in rows] == sorted(row["top1"] for row in rows)
    assert all(0 <= row["top1"] <= 1 and row["sqnr_db"] is None for row in rows)


def test_cli_ptq_calibrate(cli, tmp_path, tiny_data):
    src = _float_ckpt(tmp_path)
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "16", "--method", "max", "--json")
    assert r.code == 0, r.err
    j = r.json()
    assert j["output"] == str(tmp_path / "float-int8.pt") and (tmp_path / "float-int8.pt").is_file()
    assert j["num_images"] == 16 and j["quantized_layers"] == 9
    table = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "16", "--sensitivity", "-o",
                tmp_path / "s.pt")  # fmt: skip
    assert table.code == 0 and "Per-layer sensitivity" in table.out and "model.0.conv" in table.out


def test_val_images_compares_on_a_subset_of_every_class(cli, tmp_path, tiny_data):
    from optkit.data import resolve_data
    from optkit.tasks import get_task
    from optkit.workflows.ptq import _val_batches

    spec = resolve_data(str(tiny_data))
    pre = {"mean": [0.0] * 3, "std": [1.0] * 3}
    task = get_task("classify")
    val = task.image_dataset(spec, CLASSES, 32, "val", pre)
    whole = _val_batches(val, task.collate, None)
    subset = _val_batches(val, task.collate, 6)
    assert sum(len(y) for _, y in whole) == 18 and sorted(torch.cat([y for _, y in subset]).tolist()) == [
        0, 0, 1, 1, 2, 2
    ]  # fmt: skip
    r = cli("ptq-calibrate", _float_ckpt(tmp_path), "--data", tiny_data, "--num-images", "8",
            "--val-images", "6", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json()["val_images"] == 6


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--method", "kl"), "--method 'kl' is not known"),
        (("--percentile", "0"), "--percentile must be in (0, 100]"),
        (("--skip", "model.99"), "--skip model.99: no quantizable layer"),
        (("--auto-skip", "-1"), "--auto-skip takes a top-1 drop"),
        (("--sensitivity-metric", "f1"), "--sensitivity-metric must be one of"),
    ],
)
def test_cli_bad_options(cli, tmp_path, tiny_data, args, fragment):
    src = _float_ckpt(tmp_path)
    before = src.read_bytes()
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "8", *args)
    assert r.code == 1 and fragment in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "float-int8.pt").exists() and src.read_bytes() == before


def test_cli_refuses_quantized_input(cli, tmp_path, tiny_data):
    src = _float_ckpt(tmp_path)
    _ptq(src, tiny_data, tmp_path / "q.pt")
    r = cli("ptq-calibrate", tmp_path / "q.pt", "--data", tiny_data)
    assert r.code == 1 and "already quantized" in r.err


def test_cli_needs_data(cli, tmp_path):
    r = cli("ptq-calibrate", _float_ckpt(tmp_path))
    assert r.code == 2 and "--data" in r.err


def test_cli_without_modelopt_says_what_to_install(cli, tmp_path, tiny_data, monkeypatch):
    import sys

    src = _float_ckpt(tmp_path)
    for name in [m for m in sys.modules if m == "modelopt" or m.startswith("modelopt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelopt", None)  # `import modelopt...` raises ImportError
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "8")
    assert r.code == 1 and "pip install 'optkit[quant]'" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "float-int8.pt").exists()
