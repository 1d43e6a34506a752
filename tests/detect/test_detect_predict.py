"""`optkit predict` (issue 14, parts 7 and 9): a detector's boxes in each image's own pixels, drawn with
--save into one .jpg per image, and one-line refusals of a missing or empty source and of a classifier."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from yolo_folders import NAMES, box_iou, truth_boxes

MATCH_IOU = 0.5


def _source(tmp_path: Path, det_data: Path) -> Path:
    """The val images in a folder tree (two of them under sub/, one of those twice as large)."""
    images = sorted((det_data.parent / "images" / "val").glob("*.png"))
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    shutil.copy(images[0], source / "000.png")
    shutil.copy(images[1], source / "sub" / "001.png")
    with Image.open(images[2]) as img:
        img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST).save(source / "sub" / "002.png")
    return source


def _label(det_data: Path, rel: str) -> Path:
    """The val label file of a copied image (named as the val image it copies)."""
    return det_data.parent / "labels" / "val" / f"{Path(rel).stem}.txt"


def test_predict_json_boxes_are_in_each_images_own_pixels(cli, tmp_path, det_data, learned_det):
    source = _source(tmp_path, det_data)
    r = cli("predict", learned_det, "--source", source, "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["imgsz"] == 64 and result["save_dir"] is None
    listed = {Path(i["image"]).relative_to(source).as_posix(): i for i in result["images"]}
    assert sorted(listed) == ["000.png", "sub/001.png", "sub/002.png"]
    matched = total = 0
    for rel, image in listed.items():
        with Image.open(source / rel) as img:
            assert (image["width"], image["height"]) == img.size
        for det in image["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= image["width"] and 0 <= y1 < y2 <= image["height"], det
            assert det["name"] == NAMES[det["class"]] and 0.25 <= det["score"] <= 1, det
        # the detector was fitted to these images: its boxes land on the objects, in this copy's pixels
        for cls, *box in truth_boxes(_label(det_data, rel), image["width"], image["height"]):
            total += 1
            matched += any(
                d["class"] == cls and box_iou(d["box"], box) >= MATCH_IOU for d in image["detections"]
            )
    assert total >= 3 and matched >= 0.8 * total, (matched, total, result)


@pytest.mark.usefixtures("wide_console")
def test_predict_save_draws_one_jpg_per_image(cli, tmp_path, det_data, learned_det):
    source = _source(tmp_path, det_data)
    project = tmp_path / "P"
    r = cli("predict", learned_det, "--source", source, "--save", "--project", project)
    assert r.code == 0, r.err
    run = project / "exp"
    drawn = sorted(p.name for p in run.iterdir())
    assert drawn == ["000.jpg", "sub_001.jpg", "sub_002.jpg"]  # names from the path below --source
    for name, original in zip(drawn, ["000.png", "sub/001.png", "sub/002.png"], strict=True):
        with Image.open(run / name) as img, Image.open(source / original) as src:
            assert img.format == "JPEG" and img.size == src.size
            # boxes were drawn: the picture is not the image itself (beyond JPEG's loss)
            diff = np.abs(np.asarray(img.convert("RGB"), np.int16) - np.asarray(src.convert("RGB"), np.int16))
            assert (diff > 60).any(), name
    assert f"drawn images: {run}" in r.out
    for line in ("000.png (80x60):", "001.png (80x60):", "002.png (160x120):"):
        assert line in r.out, r.out
    # a second run goes to exp2
    assert cli("predict", learned_det, "--source", source, "--save", "--project", project).code == 0
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2"]


def _one_error_line(r) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and r.out == ""
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "empty-folder", "classifier"])
def test_predict_refusals_are_one_line(cli, tmp_path, det_data, det_run, case):
    weights, source = det_run.best, _source(tmp_path, det_data)
    if case == "missing":
        source = tmp_path / "nowhere"
        fragment = f"{source}: no such image, folder or list"
    elif case == "empty-folder":
        source = tmp_path / "empty"
        source.mkdir()
        (source / "notes.txt").write_text("not an image")
        fragment = f"{source} holds no images"
    else:
        from optkit.checkpoint import checkpoint_from_model, save_checkpoint
        from optkit.models import create_model

        model = create_model("test-tiny", num_classes=2)
        weights = save_checkpoint(checkpoint_from_model(model, NAMES, 32), tmp_path / "cls.pt")
        fragment = "is a classify model"
    line = _one_error_line(cli("predict", weights, "--source", source, "--save", "--project", tmp_path / "P"))
    assert fragment in line, line
    assert not (tmp_path / "P").exists()  # refused before the run folder was made
