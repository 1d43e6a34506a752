"""ptq-calibrate on foreign checkpoints (--trust) and plain state_dicts (--model)."""

from __future__ import annotations

import torch
from foreign_helpers import IMGSZ, NAMES, detector, ultralytics_file, write_det_data
from test_foreign_cli import EXTRA_KEYS, load_output, run_float, trusted


def _quantizers(module) -> int:
    return sum(type(m).__name__ == "TensorQuantizer" and m.is_enabled for m in module.modules())


def _restored(out: dict):
    """ModelOpt's documented restore: the recipe onto the float module, then the weights with amax."""
    import modelopt.torch.opt as mto

    model = out["model"].float()
    assert _quantizers(model) == 0  # `model` itself is the fused float module: the user's tools load it
    model = mto.restore_from_modelopt_state(model, out["modelopt_state"])
    model.load_state_dict(out["modelopt_weights"])
    return model.eval()


def test_classifier_keeps_its_layout(cli, trained_classifier, tiny_data, code_dir, tmp_path):
    r = cli(
        "ptq-calibrate",
        trained_classifier,
        "--data",
        tiny_data,
        *trusted(code_dir),
        "--num-images",
        "24",
        "--json",
    )
    assert r.code == 0, r.err
    d = r.json()
    assert d["output"] == str(tmp_path / "cls-int8.pt") and d["quantized_layers"] > 0
    assert d["int8_top1"] >= 0.8 and d["top1_agreement"] >= 0.8 and d["float_top1"] >= 0.9
    original = load_output(trained_classifier, code_dir)
    out = load_output(tmp_path / "cls-int8.pt", code_dir)  # the user's tools: their code + modelopt
    assert set(EXTRA_KEYS) <= set(out) and set(original) <= set(out)
    assert out["optkit_lineage"][-1]["stage"] == "ptq-calibrate"
    model = _restored(out)
    assert _quantizers(model) == 2 * d["quantized_layers"]
    x = torch.rand(4, 3, IMGSZ, IMGSZ)
    ref, got = run_float(original["model"], x), run_float(model, x)
    assert (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.75


def test_detector_is_scored_by_map(cli, code_dir, tmp_path):
    """A foreign detector is calibrated on a YOLO dataset and scored as detect scores it (mAP50-95),
    float against INT8, beside the output SQNR."""
    model = detector(code_dir)
    data, _ = write_det_data(tmp_path / "det", model)
    best = ultralytics_file(model, tmp_path / "best.pt", "best")
    r = cli("ptq-calibrate", best, "--data", data, *trusted(code_dir), "--num-images", "8", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert 0 < d["float_map"] <= 1 and d["int8_map"] is not None and d["sqnr_db"] > 5
    out = load_output(tmp_path / "best-int8.pt", code_dir)
    assert out["epoch"] == -1 and _quantizers(_restored(out)) > 0


def test_refused_without_trust(cli, best, tiny_data, tmp_path):
    before = best.read_bytes()
    r = cli("ptq-calibrate", best, "--data", tiny_data)
    assert r.code == 1 and "--trust" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "best-int8.pt").exists() and best.read_bytes() == before


def test_state_dict_with_model_name(cli, tmp_path, tiny_data):
    from optkit.checkpoint import load_checkpoint
    from optkit.models import create_model
    from optkit.quant.quantizers import quantize_entry

    torch.manual_seed(0)
    path = tmp_path / "weights.pt"
    torch.save(create_model("test-resnet", num_classes=len(NAMES)).state_dict(), path)
    r = cli(
        "ptq-calibrate", path, "--data", tiny_data, "--model", "test-resnet", "--num-images", "16", "--json"
    )
    assert r.code == 0, r.err
    ckpt = load_checkpoint(tmp_path / "weights-int8.pt")
    assert quantize_entry(ckpt.transforms) is not None and ckpt.arch["name"] == "test-resnet"


def test_act_swap_needs_optkit_checkpoint(cli, trained_classifier, tiny_data, code_dir):
    r = cli("ptq-calibrate", trained_classifier, "--data", tiny_data, *trusted(code_dir), "--act", "relu")
    assert r.code == 1 and "--act" in r.err and "optkit checkpoint" in r.err
