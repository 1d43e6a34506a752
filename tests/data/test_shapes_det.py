"""builtin:shapes-det: the YOLO folder and its data.yaml, valid and tight labels, backgrounds, object counts,
determinism across process counts, and the cache (generated once at its own size, then reused)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from optkit.data import shapes_det
from optkit.data.shapes import BUILTINS, MARKER, builtin_root
from optkit.data.shapes_det import CLASSES, Scene, generate_shapes_det

PLAIN = Scene(texture=False, clutter=False)  # flat background: every other pixel belongs to an object


def _digest(root: Path) -> str:
    """Hash of every file's path and bytes (images, labels, data.yaml, marker)."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _labels(root: Path, split: str, i: int) -> np.ndarray:
    text = (root / "labels" / split / f"{i:06d}.txt").read_text()
    return np.array([line.split() for line in text.splitlines()], dtype=np.float64).reshape(-1, 5)


def _image(root: Path, split: str, i: int) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / split / f"{i:06d}.png"))


def _object_pixels(img: np.ndarray) -> np.ndarray:
    """Pixels that differ from the flat background (objects keep 1 px from the border: (0, 0) is bg)."""
    return (img != img[0, 0]).any(axis=-1)


def _box_px(row: np.ndarray, size: int) -> tuple[float, float, float, float]:
    _, cx, cy, w, h = row * [1, size, size, size, size]
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> Path:
    """The full scene (texture, clutter), 60 train / 20 val images."""
    root = tmp_path_factory.mktemp("det") / "shapes-det"
    generate_shapes_det(root, n_train=60, n_val=20, workers=1)
    return root


def test_folder_layout_and_data_yaml(det):
    spec = yaml.safe_load((det / "data.yaml").read_text())
    assert spec.get("path", ".") == "."  # folders are relative to the yaml's own folder
    assert spec["names"] == list(CLASSES) and spec["nc"] == len(CLASSES) == 6
    for split, n in (("train", 60), ("val", 20)):
        images = sorted((det / spec[split]).glob("*.png"))
        assert [p.stem for p in images] == [f"{i:06d}" for i in range(n)]
        labels = sorted((det / "labels" / split).glob("*.txt"))
        assert [p.stem for p in labels] == [p.stem for p in images]
    img = Image.open(det / "images" / "val" / "000003.png")
    assert img.size == (shapes_det.IMGSZ, shapes_det.IMGSZ) and img.mode == "RGB"


def test_labels_are_valid_yolo_rows(det):
    rows = np.concatenate([_labels(det, "train", i) for i in range(60)])
    assert rows.shape[1] == 5 and len(rows) > 60
    cls, boxes = rows[:, 0], rows[:, 1:]
    assert np.all(cls == np.round(cls)) and set(cls.astype(int)) == set(range(len(CLASSES)))
    assert np.all((boxes >= 0) & (boxes <= 1))
    x1, y1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    assert x1.min() >= 0 and y1.min() >= 0 and x2.max() <= 1 and y2.max() <= 1  # whole objects
    side = boxes[:, 2:].max(axis=1)
    assert 0.05 < side.min() and side.max() <= shapes_det.SIZE_RANGE[1] + 0.01  # within the size range
    text = (det / "labels" / "train" / "000000.txt").read_text().splitlines()[0]
    assert all(len(v.split(".")[1]) == 6 for v in text.split()[1:])  # 6 decimals


def test_background_images_and_objects_per_image(det):
    for split, n in (("train", 60), ("val", 20)):
        counts = [len(_labels(det, split, i)) for i in range(n)]
        backgrounds = [i for i, c in enumerate(counts) if c == 0]
        assert backgrounds == [i for i in range(n) if i % 20 == 19]  # 5 %, empty label files
        assert all(1 <= c <= shapes_det.MAX_OBJECTS for i, c in enumerate(counts) if i not in backgrounds)
    counts = [len(_labels(det, "train", i)) for i in range(60) if i % 20 != 19]
    top = shapes_det.MAX_OBJECTS  # uniform in 1..top, a few placements may fail
    assert 0.35 * (top + 1) <= np.mean(counts) <= 0.6 * (top + 1) and max(counts) == top and min(counts) == 1
    assert _image(det, "train", 19).std() > 5  # a background image still has texture and clutter


def test_one_object_box_is_exactly_its_pixels(tmp_path):
    """One object on a flat background: the label's edges fall in the first and last object pixel
    rows and columns (the box comes from the drawn pixels, not the nominal size)."""
    size = 128
    generate_shapes_det(tmp_path / "one", size, 24, 1, scene=dataclasses.replace(PLAIN, max_objects=1))
    for i in range(24):
        if i % 20 == 19:
            continue
        (row,) = _labels(tmp_path / "one", "train", i)
        ys, xs = np.nonzero(_object_pixels(_image(tmp_path / "one", "train", i)))
        x1, y1, x2, y2 = _box_px(row, size)
        eps = 1e-3  # labels have 6 decimals of the side: 1.3e-4 px at 128 px
        assert xs.min() - eps <= x1 < xs.min() + 1 + eps and xs.max() - eps < x2 <= xs.max() + 1 + eps
        assert ys.min() - eps <= y1 < ys.min() + 1 + eps and ys.max() - eps < y2 <= ys.max() + 1 + eps


def test_many_objects_boxes_cover_every_object_pixel_and_touch_their_edges(tmp_path):
    size = 128
    generate_shapes_det(tmp_path / "many", size, 24, 1, scene=PLAIN)
    for i in range(24):
        drawn = _object_pixels(_image(tmp_path / "many", "train", i))
        covered = np.zeros_like(drawn)
        for row in _labels(tmp_path / "many", "train", i):
            x1, y1, x2, y2 = _box_px(row, size)
            c0, r0 = math.floor(x1 + 1e-3), math.floor(y1 + 1e-3)  # first pixel column / row in the box
            c1, r1 = math.ceil(x2 - 1e-3), math.ceil(y2 - 1e-3)  # one past the last
            covered[r0:r1, c0:c1] = True
            inside = drawn[r0:r1, c0:c1]
            # each edge of the box touches object pixels (its own, or an object drawn over it there)
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert not (drawn & ~covered).any()  # no object pixel outside every box


def test_occlusion_is_partial():
    """Objects overlap, yet each keeps at least 60 % of its area visible (the scene's own record of
    what later objects left of it)."""
    hidden = []
    for i in range(40):
        rng = np.random.default_rng([0, 0, i])
        img = np.zeros((128, 128, 3), np.float32)
        placed = shapes_det._add_objects(img, rng, 6, np.zeros(3), np.zeros(3), np.full(3, 255.0))
        hidden += [1 - float(p.visible.sum()) / p.area for p in placed]
    hidden = np.array(hidden)
    assert hidden.max() <= shapes_det.MAX_HIDDEN + 1e-6  # never more than MAX_HIDDEN hidden
    assert (hidden > 0.05).sum() >= 5  # but real overlaps occur


def test_byte_identical_across_runs_and_process_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_det, "CHUNK", 8)  # several chunks, spread over the two processes
    generate_shapes_det(tmp_path / "a", 64, 30, 10, workers=1)
    generate_shapes_det(tmp_path / "b", 64, 30, 10, workers=1)
    generate_shapes_det(tmp_path / "c", 64, 30, 10, workers=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") == _digest(tmp_path / "c")
    generate_shapes_det(tmp_path / "d", 64, 30, 10, seed=1, workers=1)
    assert _digest(tmp_path / "d") != _digest(tmp_path / "a")
    arrays = [_image(tmp_path / "a", "train", i) for i in range(30)]
    assert len({a.tobytes() for a in arrays}) == 30


def test_builtin_entry_matches_the_module():
    spec = BUILTINS["shapes-det"]
    assert (spec.version, spec.imgsz, spec.n_train, spec.n_val, spec.seed) == (
        shapes_det.VERSION,
        shapes_det.IMGSZ,
        shapes_det.N_TRAIN,
        shapes_det.N_VAL,
        shapes_det.SEED,
    )


def test_builtin_is_generated_once_at_its_own_size_and_reused(tmp_path, monkeypatch):
    small = dataclasses.replace(BUILTINS["shapes-det"], n_train=20, n_val=4)
    monkeypatch.setitem(BUILTINS, "shapes-det", small)
    messages = []
    root = builtin_root("shapes-det", imgsz=64, cache_dir=tmp_path, log=messages.append)
    assert root.name == f"shapes-det-v{shapes_det.VERSION}-{shapes_det.IMGSZ}"  # not the 64 asked for
    assert Image.open(root / "images" / "train" / "000000.png").size == (256, 256)
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 4
    mtime = (root / MARKER).stat().st_mtime_ns
    assert builtin_root("shapes-det", imgsz=128, cache_dir=tmp_path, log=messages.append) == root
    assert (root / MARKER).stat().st_mtime_ns == mtime
    assert len(messages) == 1 and "generating builtin:shapes-det (20 train / 4 val, 256 px)" in messages[0]
    assert not list(tmp_path.rglob(".*tmp*"))  # no temp folders left behind


def test_bad_arguments_are_refused(tmp_path):
    from optkit.errors import ConfigError

    with pytest.raises(ConfigError, match="imgsz >= 32"):
        generate_shapes_det(tmp_path / "x", 16, 4, 4)
    with pytest.raises(ConfigError, match="at least 1 train and 1 val image"):
        generate_shapes_det(tmp_path / "x", 64, 0, 4)
    assert not (tmp_path / "x").exists()
