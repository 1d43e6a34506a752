"""`optkit val` of a detector (issue 14, parts 8 and 10): P, R, mAP50, mAP50-95 and the per-class table, the
JSON figures, --conf, an exported .onnx scored like its .pt, and the one-line refusals of a detector on
classification data and of a classifier on a data.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from image_folders import write_image_folder
from yolo_folders import NAMES, box_iou, truth_boxes

from optkit.checkpoint import load_checkpoint

METRICS = ("precision", "recall", "map50", "map")


def _val(cli, weights, data, *extra) -> dict:
    r = cli("val", weights, "--data", data, "--workers", "0", "--json", *extra)
    assert r.code == 0, r.err
    return r.json()


def _one_error_line(r) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and r.out == ""
    return lines[0]


def _table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


@pytest.mark.usefixtures("wide_console")
def test_val_prints_p_r_map_and_a_row_per_class(cli, det_data, learned_det, monkeypatch):
    monkeypatch.chdir(det_data.parent)  # a short data column: the table stays on one line per row
    r = cli("val", learned_det, "--data", "data.yaml", "--workers", "0")
    assert r.code == 0, r.err
    header = _table_row(r.out, "data")
    assert header[3:7] == ["P", "R", "mAP50", "mAP50-95"], header
    row = _table_row(r.out, "data.yaml")
    figures = load_checkpoint(learned_det).metrics  # what the fixture measured on the same images
    assert row[1:3] == ["6", "64"]
    assert [float(v) for v in row[3:7]] == pytest.approx([figures[k] for k in METRICS], abs=5e-4)
    assert "per class" in r.out
    for name in NAMES:
        cells = _table_row(r.out, name)
        assert len(cells) == 7 and all(0 <= float(v) <= 1 for v in cells[3:]), cells


def test_val_json_has_the_figures_and_named_classes(cli, det_data, learned_det):
    result = _val(cli, learned_det, det_data)
    assert result["task"] == "detect" and result["images"] == 6 and result["imgsz"] == 64
    figures = load_checkpoint(learned_det).metrics
    for key in METRICS:
        assert result[key] == pytest.approx(figures[key], abs=1e-6), key
    assert result["map50"] > 0.3 and result["map"] <= result["map50"]
    assert [row["name"] for row in result["per_class"]] == NAMES
    assert [row["index"] for row in result["per_class"]] == [0, 1]
    assert sum(row["instances"] for row in result["per_class"]) == _boxes(det_data, "val")
    for row in result["per_class"]:
        assert all(0 <= row[k] <= 1 for k in METRICS), row
    # the overall mAP is the mean over the classes (each has ground truth here)
    assert result["map"] == pytest.approx(sum(row["map"] for row in result["per_class"]) / 2, abs=1e-9)


def _boxes(det_data, split: str) -> int:
    labels = det_data.parent / "labels" / split
    return sum(len(p.read_text().splitlines()) for p in labels.glob("*.txt"))


def _best_match_scores(cli, det_data, learned_det) -> list[float]:
    """For each val box, the highest score of a detection of its class that overlaps it by IoU >= 0.5
    (from `optkit predict` at val's own thresholds, in image pixels), 0 where none does."""
    r = cli(
        "predict", learned_det, "--source", det_data.parent / "images" / "val", "--conf", "0.001", "--json"
    )
    assert r.code == 0, r.err
    best = []
    for image in r.json()["images"]:
        label = det_data.parent / "labels" / "val" / f"{Path(image['image']).stem}.txt"
        for cls, *box in truth_boxes(label, image["width"], image["height"]):
            scores = [
                d["score"] for d in image["detections"] if d["class"] == cls and box_iou(d["box"], box) >= 0.5
            ]
            best.append(max(scores, default=0.0))
    return sorted(best)


def test_conf_thresholds_the_detections_val_scores(cli, det_data, learned_det):
    default = _val(cli, learned_det, det_data)
    at_half = _val(cli, learned_det, det_data, "--conf", "0.5")
    assert at_half["recall"] <= default["recall"] + 1e-9 and at_half["map50"] <= default["map50"] + 1e-9
    # a threshold above the best matching score of half of the boxes leaves those boxes unfound
    best = _best_match_scores(cli, det_data, learned_det)
    cut = best[len(best) // 2] + 1e-5  # predict rounds scores to 5 decimals
    assert 0.001 < cut < 1, best
    strict = _val(cli, learned_det, det_data, "--conf", f"{cut:.6f}")
    assert strict["map50"] < default["map50"], (strict, default, best)
    assert strict["recall"] <= default["recall"] + 1e-9
    everything_cut = _val(cli, learned_det, det_data, "--conf", "1.0")  # no score exceeds 1
    assert [everything_cut[k] for k in METRICS] == [0.0] * 4


@pytest.mark.slow
def test_val_of_the_exported_onnx_equals_the_pt(cli, tmp_path, det_data, learned_det):
    onnx = tmp_path / "x.onnx"
    r = cli("export", learned_det, "-o", onnx, "--data", det_data)
    assert r.code == 0, r.err
    pt, ort = _val(cli, learned_det, det_data), _val(cli, onnx, det_data)
    assert ort["runtime"] == "onnxruntime" and ort["task"] == "detect"
    for key in METRICS:
        assert ort[key] == pytest.approx(pt[key], abs=1e-6), key
    assert [row["name"] for row in ort["per_class"]] == NAMES
    assert pt["map50"] > 0.3  # a figure worth comparing


def test_a_classifier_on_a_data_yaml_is_one_line(cli, tmp_path, det_data):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    classifier = save_checkpoint(
        checkpoint_from_model(create_model("test-tiny", num_classes=2), NAMES, 32), tmp_path / "cls.pt"
    )
    line = _one_error_line(cli("val", classifier, "--data", det_data, "--workers", "0"))
    assert str(det_data) in line and "class folders" in line, line


@pytest.mark.parametrize("data", ["class-folders", "builtin:shapes"])
def test_a_detector_on_classification_data_is_one_line(cli, tmp_path, det_run, data):
    if data == "class-folders":
        data = str(write_image_folder(tmp_path / "colors", NAMES, per_class=4))
    line = _one_error_line(cli("val", det_run.best, "--data", data, "--workers", "0"))
    assert data in line and "data.yaml" in line, line
