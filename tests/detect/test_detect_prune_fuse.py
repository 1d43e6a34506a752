"""`optkit prune`, `fuse` and `strip` on detectors (issue 15, parts 1 and 2).

prune: unstructured and structured on a tiny detector that has learned its val images (tests/detect/
conftest.py: learned_det), through the CLI. The head's output convs (box DFL bins, class scores) keep
their channels; the file reloads with `torch.load(weights_only=True)` and rebuilds to the outputs of the
same pruning done by the library; the report gives mAP50-95 and mAP50 (never top-1) before, after pruning
and after fine-tuning (with the detection loss, through the trainer); structured pruning cuts GFLOPs and
the result still exports. fuse and strip: the decoded outputs ([B, 4 + nc, N], eval mode) stay equal.
"""

from __future__ import annotations

import json

import pytest
import torch
from yolo_folders import NAMES

from optkit.checkpoint import build_model, load_checkpoint

IMGSZ = 64  # test-det's size (conftest.IMGSZ)
NC = len(NAMES)
N_CELLS = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))  # decoded outputs per image
BOX_BINS = 4 * 16  # DFL logits of the box convs (4 sides x 16 bins)
SHOWN = [
    {"key": "map", "label": "mAP50-95", "percent": False},
    {"key": "map50", "label": "mAP50", "percent": False},
]


def _rebuilt(path):
    """The model a file holds, rebuilt by optkit after checking that it is weights-only data."""
    torch.load(path, weights_only=True)  # plain data: no pickled module (raises otherwise)
    return build_model(load_checkpoint(path))


def _original(learned_det):
    return build_model(load_checkpoint(learned_det))


def _val_images(det_data):
    """The val split as the model sees it at validation: one batch [6, 3, 64, 64]."""
    from optkit.tasks import get_task

    task = get_task("detect")
    data = task.resolve_data(str(det_data), log=lambda line: None, splits=("val",))
    dataset = task.image_dataset(data, NAMES, IMGSZ, "val")
    images, _ = task.collate([dataset[i] for i in range(len(dataset))])
    return images


def _decoded(model, images):
    with torch.no_grad():
        return model.eval()(images)


def _head_outputs(model) -> dict[str, tuple[int, int]]:
    """Output convs of the Detect head: name -> (out_channels, in_channels)."""
    from optkit.models.parts import output_layer_names

    modules = dict(model.named_modules())
    return {n: (modules[n].out_channels, modules[n].in_channels) for n in output_layer_names(model)}


def _prune(cli, learned_det, det_data, output, *args):
    r = cli("prune", learned_det, "--data", det_data, "--workers", "0", "--batch-size", "8", *args,
            "-o", output, "--json")  # fmt: skip
    assert r.code == 0, r.err
    return json.loads(r.out)


def _assert_map_report(out: dict, stages: tuple[str, ...]) -> None:
    """The task's metrics, shown as mAP50-95 / mAP50, measured at each stage; nothing called top-1."""
    assert out["task"] == "detect" and out["metrics"] == SHOWN
    for when in stages:
        metrics = out[f"metrics_{when}"]
        assert set(metrics) == {"precision", "recall", "map50", "map"}
        assert 0 <= metrics["map"] <= metrics["map50"] <= 1 and out[f"map_{when}"] == metrics["map"]
    assert not [k for k in out if k.startswith("top1")]


def test_unstructured_prune_of_a_detector_keeps_the_head_outputs_and_reports_map(
    cli, tmp_path, det_data, learned_det
):
    from optkit.stages.prune import PruneConfig, prune_unstructured

    out = _prune(cli, learned_det, det_data, tmp_path / "pu.pt", "--amount", "0.3")
    _assert_map_report(out, ("before", "pruned"))
    assert out["metrics_before"]["map50"] > 0.5  # the learned detector finds its objects
    assert abs(out["achieved"] - 0.3) < 1e-3
    original, pruned = _original(learned_det), _rebuilt(tmp_path / "pu.pt")
    assert not {f"{name}.weight" for name in _head_outputs(original)} & set(out["layers"])  # not counted
    expected, _ = prune_unstructured(original, PruneConfig(amount=0.3))  # what the CLI did, in memory
    images = _val_images(det_data)
    assert torch.equal(_decoded(pruned, images), _decoded(expected, images))
    assert _decoded(pruned, images).shape == (len(images), 4 + NC, N_CELLS)
    modules, before = dict(pruned.named_modules()), dict(original.named_modules())
    for name in _head_outputs(original):  # the head's output convs: neither zeroed nor resized
        assert torch.equal(modules[name].weight, before[name].weight), name


def test_unstructured_prune_table_shows_map_rows(cli, tmp_path, det_data, learned_det, wide_console):
    r = cli("prune", learned_det, "--amount", "0.3", "--data", det_data, "--workers", "0",
            "-o", tmp_path / "pu.pt")  # fmt: skip
    assert r.code == 0, r.err
    assert "mAP50-95 / mAP50 before" in r.out and "mAP50-95 / mAP50 pruned" in r.out
    assert "top-1" not in r.out and "top-1" not in r.err
    assert "mAP50-95 before pruning on" in r.err  # the step lines name the metric too
    before = json.loads(cli("val", learned_det, "--data", det_data, "--workers", "0", "--json").out)
    row = next(line for line in r.out.splitlines() if "mAP50-95 / mAP50 before" in line)
    assert f"{before['map']:.3f} / {before['map50']:.3f}" in row  # the figures val measures


def test_structured_prune_of_a_detector_cuts_gflops_keeps_the_head_outputs_and_exports(
    cli, tmp_path, det_data, learned_det
):
    from optkit.measure.flops import count_flops
    from optkit.stages.prune_structured import StructuredPruneConfig, prune_structured

    args = ("--structured", "--amount", "0.3", "--round-to", "4")
    out = _prune(cli, learned_det, det_data, tmp_path / "ps.pt", *args)
    _assert_map_report(out, ("before", "pruned"))

    original, pruned = _original(learned_det), _rebuilt(tmp_path / "ps.pt")
    assert count_flops(pruned, IMGSZ) < count_flops(original, IMGSZ)  # measured on the rebuilt file
    assert out["gflops_after"] < out["gflops_before"] and out["params_after"] < out["params_before"]
    config = StructuredPruneConfig(amount=0.3, round_to=4, imgsz=IMGSZ)
    expected, _ = prune_structured(original, config)  # the same pruning, in memory
    images = _val_images(det_data)
    assert torch.equal(_decoded(pruned, images), _decoded(expected, images))
    assert _decoded(pruned, images).shape == (len(images), 4 + NC, N_CELLS)
    heads_before, heads_after = _head_outputs(original), _head_outputs(pruned)
    assert [oc for oc, _ in heads_after.values()] == [BOX_BINS] * 3 + [NC] * 3
    assert [oc for oc, _ in heads_after.values()] == [oc for oc, _ in heads_before.values()]
    assert any(a[1] < b[1] for a, b in zip(heads_after.values(), heads_before.values(), strict=True))
    r = cli("fuse", tmp_path / "ps.pt", "-o", tmp_path / "psf.pt")  # the next stage takes the pruned file
    assert r.code == 0, r.err
    fused = _decoded(_rebuilt(tmp_path / "psf.pt"), images)
    assert (fused - _decoded(pruned, images)).abs().max() <= 1e-4 * IMGSZ
    r = cli("export", tmp_path / "ps.pt", "-o", tmp_path / "ps.onnx")
    assert r.code == 0, r.err  # export checks the ONNX outputs against the pruned model's
    val = cli("val", tmp_path / "ps.onnx", "--data", det_data, "--workers", "0", "--json")
    assert val.code == 0, val.err
    assert abs(json.loads(val.out)["map"] - out["map_pruned"]) < 1e-3


def test_prune_fine_tunes_a_detector_with_the_detection_loss(
    cli, tmp_path, det_data, learned_det, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the fine-tuning run goes to runs/prune/
    args = ("--structured", "--amount", "0.3", "--round-to", "4", "--finetune-epochs", "1")
    out = _prune(cli, learned_det, det_data, tmp_path / "pf.pt", *args)
    _assert_map_report(out, ("before", "pruned", "finetuned"))
    run = tmp_path / out["finetune_run"]
    results = (run / "results.csv").read_text().splitlines()
    assert len(results) == 2 and all(f"train_{part}_loss" in results[0] for part in ("box", "cls", "dfl"))

    tuned = load_checkpoint(tmp_path / "pf.pt")
    assert tuned.task == "detect" and tuned.metrics["map"] == out["map_finetuned"]
    assert [t["kind"] for t in tuned.transforms] == ["prune-structured"]  # still the pruned structure
    model = _rebuilt(tmp_path / "pf.pt")
    assert [oc for oc, _ in _head_outputs(model).values()] == [BOX_BINS] * 3 + [NC] * 3
    assert model.state_dict().keys() == load_checkpoint(run / "weights" / "best.pt").model.keys()
    val = json.loads(cli("val", tmp_path / "pf.pt", "--data", det_data, "--workers", "0", "--json").out)
    assert abs(val["map"] - out["map_finetuned"]) < 1e-6  # the figure reported is the file's


def test_fuse_of_a_detector_keeps_the_decoded_outputs(cli, tmp_path, det_data, learned_det):
    r = cli("fuse", learned_det, "-o", tmp_path / "f.pt", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["fused"] and not out["bn_left"] and out["max_rel"] <= 1e-4
    images = _val_images(det_data)
    original, fused = _decoded(_original(learned_det), images), _decoded(_rebuilt(tmp_path / "f.pt"), images)
    assert fused.shape == original.shape == (len(images), 4 + NC, N_CELLS)
    boxes, scores = (fused - original)[:, :4].abs().max(), (fused - original)[:, 4:].abs().max()
    assert boxes <= 1e-4 * IMGSZ and scores <= 1e-5  # pixels; probabilities


def test_the_fuse_check_compares_decoded_detector_outputs(learned_det):
    from optkit.stages.fuse import FuseConfig, _check_input, fuse

    model = _original(learned_det)
    config = FuseConfig(imgsz=IMGSZ)
    fused, report = fuse(model, config)
    x = _check_input(model, config)  # the seeded inputs the check ran on
    reference, output = _decoded(model, x), _decoded(fused, x)
    assert reference.shape[1:] == (4 + NC, N_CELLS)  # decoded: boxes in pixels, class probabilities
    assert report.max_abs == pytest.approx((output.double() - reference.double()).abs().max().item())
    assert report.max_rel == pytest.approx(report.max_abs / reference.abs().max().item())


@pytest.mark.parametrize("half, tolerance", [(False, 0.0), (True, 0.05)])
def test_strip_of_a_detector_keeps_the_decoded_outputs(cli, tmp_path, det_data, det_run, half, tolerance):
    source = load_checkpoint(det_run.last)
    assert source.optimizer is not None and source.ema is not None  # training state to drop
    r = cli("strip", det_run.last, "-o", tmp_path / "s.pt", *(["--half"] if half else []), "--json")
    assert r.code == 0, r.err
    stripped = load_checkpoint(tmp_path / "s.pt")
    assert stripped.optimizer is None and stripped.ema is None
    images = _val_images(det_data)
    expected = _decoded(build_model(source, "ema"), images)  # the EMA weights become the model
    output = _decoded(_rebuilt(tmp_path / "s.pt"), images)
    assert output.shape == expected.shape == (len(images), 4 + NC, N_CELLS)
    assert (output[:, :4] - expected[:, :4]).abs().max() <= tolerance * IMGSZ  # box pixels
    assert (output[:, 4:] - expected[:, 4:]).abs().max() <= tolerance  # class probabilities
