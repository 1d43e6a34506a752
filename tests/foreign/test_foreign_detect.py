"""Trusted foreign detectors (issue 14, part 10) through export, val and predict: an Ultralytics 8.4 one
whose Detect head returns (y [B, 4 + nc, N], {"boxes", "scores", "feats": [3 maps]}) in eval mode, and a
YOLOv5 one returning (y [B, N, 5 + nc], [3 maps]). Both export to one output [B, 4 + nc, N] (the defect
this guards against: "ONNX Runtime returns 6 outputs, PyTorch 1"), and val of the .pt and of its .onnx
give the same mAP from the same NMS and evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign_helpers import (
    IMAGES,
    IMGSZ,
    NAMES,
    ultralytics_file,
    v8_detector,
    write_det_data,
    yolov5_detector,
    yolov5_file,
)
from PIL import Image

from optkit.measure.detect_eval import detector_output
from optkit.measure.nms import non_max_suppression
from optkit.pictures.boxes import save_jpg
from optkit.stages.export import ExportConfig, export_onnx, flat_tensors
from optkit.stages.task_output import TaskOutput, exported_output

NC = len(NAMES)
N = 3 * (8 * 8 + 4 * 4 + 2 * 2)  # YOLOv5: 3 anchors per cell at strides 8, 16, 32 of a 64 px input
N_V8 = 8 * 8 + 4 * 4 + 2 * 2  # anchor-free: one per cell


def trusted(code_dir):
    return ("--trust", "--code-dir", str(code_dir))


@pytest.fixture
def v8_pt(tmp_path, code_dir):
    """An Ultralytics 8.4 best.pt (model + EMA in fp16, train_args, names as {index: name})."""
    return ultralytics_file(v8_detector(code_dir), tmp_path / "v8.pt", "best", extra={"version": "8.4.0"})


@pytest.fixture
def v5_pt(tmp_path, code_dir):
    """A YOLOv5 train.py best.pt (`opt` instead of train_args; the task is told by the Detect head)."""
    return yolov5_file(yolov5_detector(code_dir), tmp_path / "v5.pt")


def _graph_outputs(path) -> list[tuple[str, list]]:
    import onnx

    proto = onnx.load(str(path))
    return [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in proto.graph.output]


def _metadata(path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _load_module(path, code_dir):
    from optkit.foreign.checkpoint import load_trusted

    return load_trusted(path, code_dir).module()


# --- the mechanism: flattening as torch.onnx does, and the task's one output -------------------------------


def test_flat_tensors_follows_torch_onnx_through_dicts(tmp_path, code_dir):
    """All 6 tensors of (y, {"boxes", "scores", "feats": [3 maps]}) in torch.onnx's order: the full
    graph passes the parity check output by output (it failed on dicts before)."""
    model = v8_detector(code_dir)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        out = model(x)
    y, extra = out
    flat = flat_tensors(out)
    assert len(flat) == 6 and flat[0] is y and flat[1] is extra["boxes"] and flat[2] is extra["scores"]
    assert [t.shape[1] for t in flat[3:]] == [4 * 16 + NC] * 3  # the feature maps, level by level
    report = export_onnx(model, tmp_path / "all.onnx", ExportConfig(imgsz=IMGSZ, simplify=False))
    assert [name for name, _ in _graph_outputs(tmp_path / "all.onnx")] == [f"output{i}" for i in range(6)]
    assert report.cases and report.worst().max_rel < 1e-4


@pytest.mark.parametrize("build", [v8_detector, yolov5_detector])
def test_task_output_is_the_detect_tensor(code_dir, build):
    model = build(code_dir)
    view = exported_output(model, "detect", NC, IMGSZ)
    assert isinstance(view.model, TaskOutput)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        got, want = view.model(x), detector_output(model(x), NC)
    assert got.shape == (2, 4 + NC, want.shape[2]) and torch.equal(got, want)
    assert view.note.startswith(f"output0 [B, {4 + NC}, {want.shape[2]}]")
    if build is yolov5_detector:  # [B, N, 5 + nc] rows: class score = objectness x class probability
        assert "objectness x class probability" in view.note
        with torch.no_grad():
            rows = model(x)[0]
        assert torch.allclose(got[:, 4:].transpose(1, 2), rows[..., 4:5] * rows[..., 5:])
    else:
        assert "alone" in view.note


def test_classifiers_and_single_tensor_detectors_export_as_they_are(code_dir):
    from optkit.models import create_model

    zoo = create_model("test-det", num_classes=NC).eval()
    assert exported_output(zoo, "detect", NC, IMGSZ).model is zoo  # [B, 4 + nc, N] already
    model = v8_detector(code_dir)
    view = exported_output(model, "classify", NC, IMGSZ)  # a classifier's outputs are kept as they are
    assert view.model is model and view.note is None


# --- export -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "n"), [("v8_pt", N_V8), ("v5_pt", N)])
def test_export_writes_one_detect_output(cli, request, tmp_path, code_dir, fixture, n):
    """One output0 [1, 4 + nc, N] (not 6 or 4: the old failure), parity on it, task detect in metadata."""
    path = request.getfixturevalue(fixture)
    r = cli("export", path, *trusted(code_dir), "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["checked"] and d["max_rel"] < 1e-4 and d["top1_agreement"] is None
    onnx_path = path.with_suffix(".onnx")
    assert _graph_outputs(onnx_path) == [("output0", [1, 4 + NC, n])]
    meta = _metadata(onnx_path)
    assert meta["task"] == "detect" and json.loads(meta["names"]) == NAMES and meta["imgsz"] == str(IMGSZ)
    assert json.loads(meta["preprocess"]) == {"mean": [0.0] * 3, "std": [1.0] * 3}  # pixels / 255
    assert meta["outputs"] == d["outputs_note"] and meta["outputs"].startswith(f"output0 [B, {4 + NC}, {n}]")
    from optkit.onnxrt import OrtModel

    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        want = detector_output(_load_module(path, code_dir)(x), NC)
    assert torch.allclose(OrtModel(onnx_path)(x), want, atol=1e-4, rtol=1e-4)


def test_dynamic_export_of_the_wrapped_detector(cli, v8_pt, code_dir):
    """The task's output wrapper traces with free batch and size: parity at 2 batch sizes and 2 sizes."""
    r = cli("export", v8_pt, *trusted(code_dir), "--dynamic", "--no-simplify", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert [c["shape"] for c in d["cases"]] == [[1, 3, 64, 64], [4, 3, 64, 64], [1, 3, 96, 96]]
    assert d["max_rel"] < 1e-4 and len(_graph_outputs(v8_pt.with_suffix(".onnx"))) == 1


@pytest.mark.slow
def test_export_compares_val_images_on_the_one_output(cli, v8_pt, tmp_path, code_dir):
    """Real val images in the parity check too (the detect task reads --data), on the one output."""
    data, _ = write_det_data(tmp_path / "ds", _load_module(v8_pt, code_dir))
    r = cli("export", v8_pt, *trusted(code_dir), "--data", data, "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["val_images"] == IMAGES and d["max_rel"] < 1e-4
    assert len(_graph_outputs(v8_pt.with_suffix(".onnx"))) == 1


# --- val and predict --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["v8_pt", "v5_pt"])
def test_val_pt_and_onnx_give_the_same_map(cli, request, tmp_path, code_dir, fixture):
    path = request.getfixturevalue(fixture)
    data, _ = write_det_data(tmp_path / "ds", _load_module(path, code_dir))
    r = cli("val", path, *trusted(code_dir), "--data", data, "--batch-size", "4", "--workers", "0", "--json")
    assert r.code == 0, r.err
    pt = r.json()
    assert pt["task"] == "detect" and pt["images"] == IMAGES
    assert 0.2 < pt["map50"] < 1.0 and 0.05 < pt["map"] < pt["map50"]  # own boxes, half of them shifted
    assert 0 < pt["precision"] <= 1 and 0 < pt["recall"] <= 1
    assert [row["name"] for row in pt["per_class"]] == NAMES  # the checkpoint's names
    assert cli("export", path, *trusted(code_dir), "--no-simplify").code == 0
    r = cli("val", path.with_suffix(".onnx"), "--data", data, "--batch-size", "4", "--workers", "0", "--json")
    assert r.code == 0, r.err
    ort = r.json()
    assert ort["runtime"] == "onnxruntime" and ort["task"] == "detect"
    for key in ("precision", "recall", "map50", "map"):  # the same boxes, scores equal to ~1e-7
        assert ort[key] == pytest.approx(pt[key], abs=1e-6), key


@pytest.mark.parametrize("fixture", ["v8_pt", "v5_pt"])
def test_predict_save_draws_boxes(cli, request, tmp_path, code_dir, fixture):
    """predict's boxes are the detector's own after NMS at --conf (64 px images: no letterbox), drawn."""
    path = request.getfixturevalue(fixture)
    module = _load_module(path, code_dir)
    _, images = write_det_data(tmp_path / "ds", module)
    runs = tmp_path / "runs"
    r = cli(
        "predict", path, *trusted(code_dir), "--source", images, "--save", "--project", runs,
        "--conf", "0.3", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    d = r.json()
    assert len(d["images"]) == IMAGES and sum(len(i["detections"]) for i in d["images"]) > 0
    for item in d["images"]:
        x = torch.from_numpy(np.array(Image.open(item["image"]))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            (want,) = non_max_suppression(detector_output(module(x), NC), conf=0.3)
        got = item["detections"]
        assert [det["class"] for det in got] == want[:, 5].int().tolist()
        assert [det["name"] for det in got] == [NAMES[c] for c in want[:, 5].int().tolist()]
        assert [det["score"] for det in got] == pytest.approx(want[:, 4].tolist(), abs=1e-4)
        boxes = np.array([det["box"] for det in got]).reshape(-1, 4)  # pixels, rounded to 0.01
        assert np.abs(boxes - want[:, :4].clamp(0, IMGSZ).numpy()).max(initial=0) < 0.02
    drawn = sorted((runs / "exp").glob("*.jpg"))
    assert [p.stem for p in drawn] == sorted(p.stem for p in images.glob("*.png"))
    for item in d["images"]:
        stem = Path(item["image"]).stem
        plain = tmp_path / "plain" / f"{stem}.jpg"
        save_jpg(Image.open(item["image"]).convert("RGB"), plain)  # as predict encodes, without boxes
        picture, original = (
            np.asarray(Image.open(p), dtype=np.int16) for p in (runs / "exp" / f"{stem}.jpg", plain)
        )
        assert picture.shape == original.shape == (IMGSZ, IMGSZ, 3)
        changed = (np.abs(picture - original).max(2) > 30).mean()  # same encoder: only boxes differ
        assert (changed > 0.01) == bool(item["detections"]), (stem, changed)
