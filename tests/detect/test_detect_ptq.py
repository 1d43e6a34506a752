"""`optkit ptq-calibrate` of a detector (issue 15, part 3): calibration on images alone, float vs fake-quant
INT8 mAP50-95 and mAP50 on val, the SQNR of the decoded boxes and of the class scores apart, the head's
post-processing kept float and said so, a checkpoint that reloads with weights_only=True to the same
outputs, and --sensitivity / --auto-skip counted in mAP50-95 points."""

from __future__ import annotations

import math
import re

import pytest
import torch
from yolo_folders import NAMES

from optkit.checkpoint import build_model, load_checkpoint

NC = len(NAMES)
IMGSZ = 64


def _val_images(det_data):
    """The val split as ptq-calibrate reads it (letterboxed, pixels / 255), one batch."""
    from optkit.tasks import get_task

    task = get_task("detect")
    data = task.resolve_data(str(det_data), log=lambda line: None, splits=("val",))
    dataset = task.image_dataset(data, NAMES, IMGSZ, "val")
    images, _ = task.collate([dataset[i] for i in range(len(dataset))])
    return images


def _sqnr(reference: torch.Tensor, output: torch.Tensor) -> float:
    ref, out = reference.double(), output.double()
    return 10 * math.log10(ref.pow(2).sum().item() / (ref - out).pow(2).sum().item())


def _head(model) -> str:
    from optkit.models.parts import head_name

    return head_name(model)


def _ptq_json(cli, weights, data, out, *extra) -> dict:
    r = cli("ptq-calibrate", weights, "--data", data, "--num-images", "16", "-o", out, "--json", *extra)
    assert r.code == 0, r.err
    return r.json()


def _table_row(text: str, first_cell: str) -> str:
    """The second cell of the key/value table row whose first cell is `first_cell`, with the lines it
    wraps onto joined."""
    found: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if len(cells) < 2:
            continue
        if found is not None:
            if cells[0]:
                break
            found.append(cells[1])
        elif cells[0] == first_cell:
            found = [cells[1]]
    assert found is not None, f"no row {first_cell!r} in:\n{text}"
    return " ".join(found)


def test_ptq_on_a_detector(cli, det_data, learned_det, tmp_path):
    """One run (--json --sensitivity): mAP float vs INT8, boxes / scores SQNR as measured here, the
    post-processing kept float and recorded, a file that reloads to the same outputs, the SQNR ranking."""
    from optkit.quant.quantizers import quantizable_layers, quantization_off, quantize_entry, quantized_layers

    d = _ptq_json(cli, learned_det, det_data, tmp_path / "q.pt", "--sensitivity")
    float_model = build_model(load_checkpoint(learned_det))
    recorded = load_checkpoint(learned_det).metrics  # the fixture's mAP on the same val images
    assert [m["key"] for m in d["shown"]] == ["map", "map50"]  # the metrics detect's fitness weighs
    assert d["float_map"] == pytest.approx(recorded["map"], abs=1e-3)  # fused float: the same mAP
    assert d["float_map50"] == pytest.approx(recorded["map50"], abs=1e-3)
    assert 0 < d["int8_map"] <= 1 and 0 < d["int8_map50"] <= 1
    assert abs(d["int8_map"] - d["float_map"]) < 0.2  # a working INT8 model, not a broken one
    assert "float_top1" not in d and d["top1_agreement"] is None  # a detector has no top-1
    assert d["val_images"] == 6 and d["num_images"] == 16  # the train split's 16 images calibrate

    # the SQNR of the decoded boxes (rows 0..3) and of the scores (rows 4..) apart, as measured here
    images = _val_images(det_data)
    qmodel = build_model(load_checkpoint(tmp_path / "q.pt"))
    with torch.no_grad():
        ref, out = float_model(images), qmodel(images)
    assert d["sqnr_boxes_db"] == pytest.approx(_sqnr(ref[:, :4], out[:, :4]), abs=0.05)
    assert d["sqnr_scores_db"] == pytest.approx(_sqnr(ref[:, 4:], out[:, 4:]), abs=0.05)
    assert 15 < d["sqnr_scores_db"] < d["sqnr_boxes_db"] < 80  # box pixels dwarf probabilities
    assert d["sqnr_db"] == pytest.approx(d["sqnr_boxes_db"], abs=0.5)  # which one SQNR hides
    lineage = load_checkpoint(tmp_path / "q.pt").lineage[-1]
    assert lineage["stage"] == "ptq-calibrate"
    assert lineage["metrics"]["int8_map"] == d["int8_map"] and "sqnr_scores_db" in lineage["metrics"]

    # the post-processing stays float, and the file says so
    head = _head(float_model)
    scope = d["float_scope"]
    assert scope["head"] == head and scope["modules"] == [f"{head}.dfl"] and scope["layers"] == []
    assert "DFL decode" in scope["ops"] and "sigmoid" in scope["ops"]
    # every Conv of the model is INT8 (the DFL decode has none: a fixed softmax expectation)
    assert d["quantized_layers"] == len(quantizable_layers(float_model)) and d["skipped"] == []
    raw = torch.load(tmp_path / "q.pt", map_location="cpu", weights_only=True)  # no pickled modules
    entry = quantize_entry(raw["transforms"])
    assert entry["version"] == 3 and entry["config"]["float_modules"] == [f"{head}.dfl"]

    # the file reloads to the same outputs
    again = build_model(load_checkpoint(tmp_path / "q.pt"))
    assert quantized_layers(again) == quantizable_layers(float_model)  # replayed with the same quantizers
    with torch.no_grad():
        assert out.shape == (6, 4 + NC, 84) and torch.equal(out, again(images))
        with quantization_off(again):
            assert not torch.equal(again(images), out)  # fake quantization is in the loop

    # --sensitivity: label-free, ranked by the worse of boxes and scores
    rows = d["sensitivity"]
    assert len(rows) == d["quantized_layers"] and all(row["map"] is None for row in rows)
    assert all(row["sqnr_db"] == min(row["sqnr_boxes_db"], row["sqnr_scores_db"]) for row in rows)
    assert [row["sqnr_db"] for row in rows] == sorted(row["sqnr_db"] for row in rows)
    cls_rows = [row for row in rows if row["layer"].startswith(f"{head}.cls.")]
    assert cls_rows and all(row["sqnr_boxes_db"] == math.inf for row in cls_rows)  # classes alone move


@pytest.mark.usefixtures("wide_console")
def test_table_shows_map_fidelity_kept_float_and_budget(cli, det_data, learned_det, tmp_path):
    """The table: a row per mAP, box / score SQNR, the post-processing and --skip layers kept float, the
    --auto-skip budget in mAP50-95 points, and the sensitivity table's box and score columns."""
    r = cli("ptq-calibrate", learned_det, "--data", det_data, "--num-images", "16", "-o", tmp_path / "q.pt",
            "--skip", "model.0.conv", "--auto-skip", "100")  # fmt: skip
    assert r.code == 0, r.err
    recorded = load_checkpoint(learned_det).metrics
    for label, key in (("mAP50-95", "map"), ("mAP50", "map50")):
        row = _table_row(r.out, label)
        found = re.fullmatch(r"float (\d\.\d{4}) -> INT8 (\d\.\d{4}) \(([+-]\d+\.\d\d) points\)", row)
        assert found, row
        before, after, change = (float(v) for v in found.groups())
        assert before == pytest.approx(recorded[key], abs=1e-3)
        assert change == pytest.approx((after - before) * 100, abs=0.011)
    fidelity = _table_row(r.out, "fidelity")
    assert re.fullmatch(r"SQNR boxes \d+\.\d dB, class scores \d+\.\d dB \(decoded outputs; .*\)", fidelity)
    kept = _table_row(r.out, "kept float")
    assert kept.startswith("post-processing of model.") and "DFL decode" in kept and ".dfl" in kept
    assert kept.endswith("; layers: model.0.conv")
    assert "--auto-skip: keeping layers float until mAP50-95 drops <= 100 points" in r.err
    assert _table_row(r.out, "auto-skip") == "nothing needed"  # any drop is within 100 points
    assert "Per-layer sensitivity" in r.out  # --auto-skip ranks the layers first
    header = next(line for line in r.out.splitlines() if "SQNR dB" in line)
    assert "boxes" in header and "scores" in header and "mAP50-95" in header


def test_sensitivity_by_map(cli, det_data, learned_det, tmp_path):
    d = _ptq_json(cli, learned_det, det_data, tmp_path / "q.pt", "--sensitivity", "--sensitivity-metric",
                  "fitness")  # fmt: skip
    rows = d["sensitivity"]
    assert all(0 <= row["map"] <= 1 and row["sqnr_db"] is None for row in rows)
    assert [row["map"] for row in rows] == sorted(row["map"] for row in rows)


def test_auto_skip_keeps_layers_float_within_map_points(cli, det_data, learned_det, tmp_path):
    """Ranges clipped hard (the 90th percentile) cost mAP; --auto-skip 0.5 reverts the layers that rank
    worst by SQNR, one at a time, until INT8 mAP50-95 is within 0.5 points (0.005) of float."""
    d = _ptq_json(cli, learned_det, det_data, tmp_path / "q.pt", "--method", "percentile",
                  "--percentile", "90", "--auto-skip", "0.5")  # fmt: skip
    skipped, ranked = d["auto_skipped"], [row["layer"] for row in d["sensitivity"]]
    assert skipped and skipped == ranked[: len(skipped)]
    assert (d["float_map"] - d["int8_map"]) * 100 <= 0.5 + 1e-9
    assert d["skipped"] == skipped and d["quantized_layers"] == len(ranked) - len(skipped)
    ckpt = load_checkpoint(tmp_path / "q.pt")
    assert ckpt.transforms[-1]["config"]["skip"] == skipped
    from optkit.quant.quantizers import quantized_layers

    assert not set(quantized_layers(build_model(ckpt))) & set(skipped)  # replayed float


@pytest.mark.parametrize("drop", ["-1", "100.5", "nan"])
def test_auto_skip_out_of_range_is_worded_in_map_points(cli, det_data, learned_det, tmp_path, drop):
    r = cli("ptq-calibrate", learned_det, "--data", det_data, "--auto-skip", drop, "-o", tmp_path / "q.pt")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and "Traceback" not in r.err, r.err
    assert lines[0].startswith("error: --auto-skip takes a mAP50-95 drop in points (hundredths of mAP50-95")
    assert not (tmp_path / "q.pt").exists()
