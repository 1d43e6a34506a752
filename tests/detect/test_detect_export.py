"""`optkit export` of detectors (issue 15, part 5): NMS in the graph (--nms) equal to optkit's own NMS on
real images, its settings in the metadata, val and predict of such a file, the parity check that measures
boxes and scores apart, INT8 QDQ files of a quantized detector for both targets, and --nms refused for a
classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from yolo_folders import NAMES

from optkit.checkpoint import build_model, load_checkpoint
from optkit.measure.nms import box_iou, non_max_suppression
from optkit.onnxrt import OrtModel, read_metadata
from optkit.stages.onnx_nms import NmsConfig, nms_settings

IMGSZ = 64


def _val_images(det_data: Path) -> torch.Tensor:
    """The val split as the detector sees it: [6, 3, 64, 64], pixels / 255, letterboxed."""
    from optkit.tasks import get_task

    task = get_task("detect")
    data = task.resolve_data(str(det_data), log=lambda line: None, splits=("val",))
    dataset = task.image_dataset(data, NAMES, IMGSZ, "val")
    images, _ = task.collate([dataset[i] for i in range(len(dataset))])
    return images.float()


def _export(*args) -> dict:
    """`optkit export ... --json` in-process (no capsys: usable from module fixtures)."""
    import contextlib
    import io

    from optkit.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in (*args, "--json")])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def _same_detections(ours: torch.Tensor, file_rows: torch.Tensor) -> None:
    """Every one of optkit's detections has one in the file's rows: same class, IoU >= 0.99, same score."""
    rows = file_rows[file_rows[:, 4] > 0]
    assert len(rows) == len(ours), (rows, ours)
    if not len(ours):
        return
    iou = box_iou(ours[:, :4], rows[:, :4])
    iou[ours[:, 5][:, None] != rows[:, 5][None, :]] = 0
    best = iou.argmax(1)
    assert sorted(best.tolist()) == list(range(len(rows)))  # one to one
    assert (iou.max(1).values >= 0.99).all(), iou
    assert torch.allclose(ours[:, 4], rows[best, 4], atol=1e-4)


@pytest.fixture(scope="module")
def nms_file(tmp_path_factory, det_data, learned_det) -> tuple[Path, dict]:
    """learned_det exported with NMS in the graph (dynamic batch, non-default settings), checked on the
    val images: (file, export JSON)."""
    onnx = tmp_path_factory.mktemp("det-nms") / "det-nms.onnx"
    args = ["--nms", "--conf", "0.1", "--iou", "0.6", "--max-det", "4", "--dynamic", "--data", det_data]
    return onnx, _export("export", learned_det, "-o", onnx, *args)


def test_nms_graph_equals_optkits_nms_on_real_images(nms_file, det_data, learned_det):
    onnx, result = nms_file
    images = _val_images(det_data)
    rows = OrtModel(onnx)(images)  # the file's final detections
    assert list(rows.shape) == [len(images), 4, 6]
    with torch.no_grad():
        raw = build_model(load_checkpoint(learned_det)).eval()(images)
    ours = non_max_suppression(raw, conf=0.1, iou=0.6, max_det=4)  # predict's rule: best class per box
    assert sum(len(d) for d in ours) >= 6  # the fitted detector finds its objects: a comparison worth making
    for mine, theirs in zip(ours, rows, strict=True):
        _same_detections(mine, theirs)
        kept = theirs[:, 4] > 0
        assert (theirs[~kept] == 0).all()  # padding: whole rows of zeros, after the detections
        assert kept.tolist() == sorted(kept.tolist(), reverse=True)
        assert (theirs[kept, 4].diff() <= 0).all()  # highest score first
    # the export's own check made the same comparison (on the raw graph's output) and says so
    check = result["nms_check"]
    assert check["images"] == 6 and check["detections"] == check["graph_detections"] == check["matched"]
    assert check["detections"] == sum(len(d) for d in ours)


def test_nms_graph_runs_other_batch_sizes_and_images_without_objects(nms_file):
    onnx, _ = nms_file
    blank = torch.full((3, 3, IMGSZ, IMGSZ), 114 / 255)  # the letterbox grey: nothing to find
    rows = OrtModel(onnx)(blank)
    assert list(rows.shape) == [3, 4, 6]
    real = rows[..., 4] > 0
    assert (rows[real][:, 4] > 0.1).all() and (rows[~real] == 0).all()


def test_metadata_records_the_nms_settings(nms_file):
    onnx, result = nms_file
    meta = read_metadata(onnx)
    assert nms_settings(meta) == NmsConfig(conf=0.1, iou=0.6, max_det=4)
    assert json.loads(meta["nms"])["labels"] == "best class per box"
    assert "[B, 4, 6]" in meta["outputs"] and "score is 0 are padding" in meta["outputs"]
    assert meta["task"] == "detect" and meta["names"] == NAMES
    assert result["outputs_note"] == meta["outputs"]


def test_detector_parity_measures_boxes_and_scores_apart(tmp_path, learned_det):
    from optkit.report.export import export_rows

    result = _export("export", learned_det, "-o", tmp_path / "raw2.onnx")
    printed = dict(export_rows(result))  # what the table shows
    check = printed["vs PyTorch, random 1x3x64x64"]
    assert "boxes max |Δ|" in check and "scores max |Δ|" in check and "top-1" not in check
    assert "boxes and scores apart" in printed["tolerance"]
    (case,) = result["cases"]
    assert set(case["parts"]) == {"boxes", "scores"} and case["top1_agreement"] is None
    assert case["parts"]["scores"]["scale"] <= 1 < case["parts"]["boxes"]["scale"]  # probabilities, pixels
    assert case["max_rel"] == max(p["max_rel"] for p in case["parts"].values()) <= 1e-4
    assert result["boxes_max_rel"] <= 1e-4 and result["scores_max_rel"] <= 1e-4
    assert result["nms_check"] is None and "nms" not in read_metadata(tmp_path / "raw2.onnx")


def test_a_score_error_hidden_by_the_box_scale_fails_the_check(learned_det):
    """Scores off by 0.01 are 2e-5 of the boxes' pixels (passing the whole-output check) but 1% of the
    scores' own scale: the detector's check fails them."""
    from optkit.stages.export import DECODED_PARTS, _compare

    model = build_model(load_checkpoint(learned_det)).eval()
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))

    class ScoresOff:  # the other side of the comparison: the model with every score raised by 0.01
        def run_all(self, images):
            with torch.no_grad():
                y = model(images).clone()
            y[:, 4:] += 0.01
            return [y]

    whole = _compare("random", model, ScoresOff(), [x])
    apart = _compare("random", model, ScoresOff(), [x], DECODED_PARTS["detect"])
    assert whole.max_rel < 1e-4 < apart.max_rel
    assert apart.parts["scores"]["max_abs"] == pytest.approx(0.01, rel=1e-3)
    assert apart.parts["boxes"]["max_abs"] == 0


@pytest.mark.slow
def test_val_scores_an_nms_file_with_its_own_settings(cli, tmp_path, det_data, learned_det):
    onnx = tmp_path / "nms.onnx"
    assert cli("export", learned_det, "-o", onnx, "--nms").code == 0  # default settings, built-in scenes
    r = cli("val", onnx, "--data", det_data, "--workers", "0", "--json")
    assert r.code == 0, r.err
    result = r.json()
    settings = {"conf": 0.25, "iou": 0.7, "max_det": 300, "labels": "best class per box"}
    assert result["nms_in_graph"] == settings
    assert "lower than the model's at val's conf 0.001" in result["note"]
    assert result["map50"] > 0.3 and result["images"] == 6  # scored, not misread as [B, 4 + nc, N]
    # a higher --conf keeps fewer of the file's rows; its IoU is fixed in the graph
    strict = cli("val", onnx, "--data", det_data, "--workers", "0", "--json", "--conf", "0.9").json()
    assert strict["recall"] <= result["recall"] + 1e-9 and "note" not in strict
    refused = cli("val", onnx, "--data", det_data, "--workers", "0", "--iou", "0.5")
    assert refused.code == 1 and "IoU 0.7" in refused.err and len(refused.err.strip().splitlines()) == 1
    table = cli("val", onnx, "--data", det_data, "--workers", "0")
    assert "note: the file's NMS keeps scores > 0.25" in " ".join(table.out.split())


def test_benchmark_scores_an_nms_file_as_val_does(cli, nms_file, det_data):
    onnx, _ = nms_file
    r = cli("benchmark", onnx, "--data", det_data, "--runs", "1", "--warmup", "0", "--rounds", "1", "--json")
    assert r.code == 0, r.err
    (row,) = r.json()["rows"]
    v = cli("val", onnx, "--data", det_data, "--workers", "0", "--json").json()
    assert v["map50"] > 0.3 and v["nms_in_graph"]["max_det"] == 4
    assert (row["map50"], row["map"]) == (v["map50"], v["map"])


def test_predict_of_an_nms_file_equals_predict_of_the_checkpoint(cli, tmp_path, det_data, learned_det):
    onnx = tmp_path / "nms.onnx"
    assert cli("export", learned_det, "-o", onnx, "--nms", "--no-check").code == 0
    source = det_data.parent / "images" / "val"
    pt, ort = (cli("predict", w, "--source", source, "--json").json() for w in (learned_det, onnx))
    assert sum(len(i["detections"]) for i in pt["images"]) >= 6
    for a, b in zip(pt["images"], ort["images"], strict=True):
        assert len(a["detections"]) == len(b["detections"]), (a, b)
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert da["class"] == db["class"] and da["score"] == pytest.approx(db["score"], abs=1e-4)
            assert da["box"] == pytest.approx(db["box"], abs=0.05)


def test_nms_on_a_classifier_is_one_line_and_writes_nothing(cli, tmp_path):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    classifier = save_checkpoint(
        checkpoint_from_model(create_model("test-tiny", num_classes=2), NAMES, 32), tmp_path / "cls.pt"
    )
    r = cli("export", classifier, "--nms", "-o", tmp_path / "cls.onnx")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: --nms"), r.err
    assert "is a classify model" in lines[0] and "Traceback" not in r.err
    assert not (tmp_path / "cls.onnx").exists()


# --- INT8 -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_int8_export_of_a_detector_with_nms(tmp_path, det_data, int8_det, target):
    onnx = tmp_path / f"det-{target}.onnx"
    result = _export("export", int8_det, "--int8-target", target, "--nms", "-o", onnx, "--data", det_data)
    assert result["int8"]["target"] == target
    assert json.loads(read_metadata(onnx)["quantization"])["target"] == target
    assert nms_settings(read_metadata(onnx)) == NmsConfig()
    # decoded outputs vs the fake-quant model: boxes and scores each within the target's tolerance
    for case in result["cases"]:
        if case["input"] != "nms":
            assert set(case["parts"]) == {"boxes", "scores"}
    assert result["scores_max_rel"] <= result["atol"] and result["boxes_max_rel"] <= result["atol"]
    check = result["nms_check"]
    assert check["detections"] >= 6 and check["matched"] == check["detections"] == check["graph_detections"]
    if target == "onnxruntime":  # the decode after the last layers stays float, as in the fake-quant model
        assert result["int8"]["float_tail_tensors"] > 0
        assert result["int8"]["coverage"]["int8_layers"] == len(result["int8"]["quantized_layers"])
        assert _float_decode(onnx)
    # the file's detections land on the objects as the fake-quant model's do
    images = _val_images(det_data)
    with torch.no_grad():
        raw = build_model(load_checkpoint(int8_det)).eval()(images)
    ours = non_max_suppression(raw, conf=0.25, iou=0.7, max_det=300)
    rows = OrtModel(onnx)(images)
    found = sum(
        bool(len(mine)) and bool((box_iou(mine[:, :4], r[r[:, 4] > 0][:, :4]).max(1).values >= 0.5).all())
        for mine, r in zip(ours, rows, strict=True)
    )
    assert found >= sum(bool(len(mine)) for mine in ours) - 1, (ours, rows)


def _float_decode(path: Path) -> bool:
    """Whether the raw output's final concat (boxes x stride, class sigmoid) and what feeds it are
    computed in float: no DequantizeLinear within two nodes of it."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    concat = producer["output0_raw"]  # the raw [B, 4 + nc, N] under the NMS (optkit.stages.onnx_nms)
    near = [producer[t] for t in concat.input if t in producer]
    near += [producer[t] for n in near for t in n.input if t in producer]
    return concat.op_type == "Concat" and all(n.op_type != "DequantizeLinear" for n in near)


@pytest.mark.slow
def test_int8_tensorrt_file_scores_as_the_fake_quant_model(cli, tmp_path, det_data, int8_det):
    """The tensorrt flavour computes what the fake-quant model computes: val gives its mAP; the onnxruntime
    flavour (uint8 activations, more rounding) stays close."""
    onnx = tmp_path / "trt.onnx"
    assert cli("export", int8_det, "--int8-target", "tensorrt", "-o", onnx).code == 0
    ort_file = tmp_path / "ort.onnx"
    assert cli("export", int8_det, "--int8-target", "onnxruntime", "-o", ort_file).code == 0

    def val(weights) -> dict:
        r = cli("val", weights, "--data", det_data, "--workers", "0", "--json")
        assert r.code == 0, r.err
        return r.json()

    pt, trt, ort = val(int8_det), val(onnx), val(ort_file)
    assert pt["map50"] > 0.3
    for key in ("map50", "map"):
        assert trt[key] == pytest.approx(pt[key], abs=1e-3), key
    assert ort["map50"] >= pt["map50"] - 0.1 and ort["map"] >= pt["map"] - 0.1
