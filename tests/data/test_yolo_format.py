"""YOLO-format datasets (issue 14, part 1): data.yaml variants, label paths, background images, every kind
of bad row and corrupt image (stop, naming file and line, or drop when asked), the scan cache and its
invalidation, an unwritable cache, EXIF-rotated image sizes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from optkit.data import yolo_scan
from optkit.data.folder import read_rgb
from optkit.data.yolo_format import BadLabels, label_path, load_yolo_data
from optkit.errors import DatasetError

GOOD = "0 0.5 0.5 0.25 0.5\n1 0.25 0.75 0.1 0.2\n"


def _image(path: Path, size=(32, 24), exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (40, 120, 200))
    if exif_orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif)
    return path


def _label(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _split(root: Path, split: str, labels: dict[str, str | None]) -> None:
    """images/<split>/<name>.png and, where the text is not None, labels/<split>/<name>.txt."""
    for name, text in labels.items():
        _image(root / "images" / split / f"{name}.png")
        if text is not None:
            _label(root / "labels" / split / f"{name}.txt", text)


def _yaml(dest: Path, **config) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(config))
    return dest


def _dataset(
    tmp_path: Path, train_labels: dict | None = None, val_labels: dict | None = None, **config
) -> Path:
    """A folder-layout dataset with two classes; returns its data.yaml."""
    root = tmp_path / "ds"
    _split(root, "train", train_labels or {"a": GOOD, "b": "0 0.5 0.5 1 1\n"})
    _split(root, "val", val_labels or {"c": GOOD})
    config = {"train": "images/train", "val": "images/val", "names": ["cat", "dog"], **config}
    return _yaml(root / "data.yaml", **config)


def _load(path, **kwargs):
    lines = []
    data = load_yolo_data(path, log=lines.append, **kwargs)
    return data, lines


# ---------------------------------------------------------------------------------------------- data.yaml


def test_folder_layout_reads_images_labels_shapes_and_counts(tmp_path):
    path = _dataset(tmp_path, train_labels={"b": GOOD, "a": "1 0.5 0.5 1 1\n", "c": None})
    data, lines = _load(path)
    root = tmp_path / "ds"
    assert data.names == ["cat", "dog"] and data.root == root and data.yaml_path == path
    assert data.name == str(path) and set(data.splits) == {"train", "val"}
    train = data.splits["train"]
    assert train.images == [str(root / "images" / "train" / f"{n}.png") for n in "abc"]  # sorted, absolute
    np.testing.assert_array_equal(train.labels[0], np.array([[1, 0.5, 0.5, 1, 1]], np.float32))
    np.testing.assert_array_equal(
        train.labels[1], np.float32([[0, 0.5, 0.5, 0.25, 0.5], [1, 0.25, 0.75, 0.1, 0.2]])
    )
    assert train.labels[1].dtype == np.float32 and train.labels[2].shape == (0, 5)
    assert train.shapes == [(32, 24)] * 3
    assert (train.boxes, train.backgrounds, train.skipped) == (3, 1, 0)
    assert lines[0].startswith("train: 3 images, 3 boxes, 1 backgrounds, 0 problems (scanned; cached in ")
    assert (root / "labels" / "train.optkit.cache").is_file() and (
        root / "labels" / "val.optkit.cache"
    ).is_file()
    assert lines[1].startswith("val: 1 images, 2 boxes, 0 backgrounds, 0 problems")


def test_relative_path_key_is_relative_to_the_yaml_folder(tmp_path, monkeypatch):
    _split(tmp_path / "data" / "ds", "train", {"a": GOOD})
    _split(tmp_path / "data" / "ds", "val", {"b": GOOD})
    path = _yaml(
        tmp_path / "data" / "cfg" / "data.yaml", path="../ds", train="images/train", val="images/val", nc=2
    )
    monkeypatch.chdir(tmp_path)  # not the yaml's folder
    data, _ = _load(os.path.relpath(path, tmp_path))
    assert data.root == tmp_path / "data" / "ds" and data.name == os.path.join("data", "cfg", "data.yaml")
    assert data.splits["val"].images == [str(tmp_path / "data" / "ds" / "images" / "val" / "b.png")]


def test_txt_list_lines_are_relative_to_the_list_folder(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _split(root, "train", {"a": GOOD, "b": GOOD, "c": "1 0.5 0.5 0.2 0.2\n"})
    _split(root, "val", {"d": GOOD})
    lists = root / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(
        f"../images/train/c.png\n\n./../images/train/a.png\n{root / 'images' / 'train' / 'b.png'}\n"
    )
    (lists / "val.txt").write_text("../images/val/d.png\n")
    path = _yaml(root / "data.yaml", train="lists/train.txt", val="lists/val.txt", names=["cat", "dog"])
    monkeypatch.chdir(tmp_path)
    data, lines = _load(path)
    train = data.splits["train"]
    assert train.images == [str(root / "images" / "train" / f"{n}.png") for n in "cab"]  # the list's order
    assert train.labels[0][0, 0] == 1 and train.boxes == 5
    assert (lists / "train.optkit.cache").is_file() and "cached in" in lines[0]


def test_an_image_listed_but_missing_is_a_problem(tmp_path):
    root = tmp_path / "ds"
    _split(root, "val", {"a": GOOD})
    (root / "val.txt").write_text("images/val/a.png\nimages/val/gone.png\n")
    path = _yaml(root / "data.yaml", train="val.txt", val="val.txt", nc=2)
    with pytest.raises(BadLabels, match=r"gone\.png: no such image file \(the only problem"):
        _load(path, splits="val")
    data, lines = _load(path, splits="val", skip_bad_labels=True)  # a single name is one split
    assert list(data.splits) == ["val"] and data.splits["val"].skipped == 1 and "1 images dropped" in lines[0]


def test_list_of_folders_is_one_split_with_its_own_cache(tmp_path):
    root = tmp_path / "ds"
    _split(root, "part1", {"a": GOOD})
    _split(root, "part2", {"b": "1 0.5 0.5 0.5 0.5\n"})
    path = _yaml(root / "data.yaml", train=["images/part1", "images/part2"], val="images/part2", nc=2)
    data, _ = _load(path)
    train = data.splits["train"]
    assert train.images == [
        str(root / "images" / "part1" / "a.png"),
        str(root / "images" / "part2" / "b.png"),
    ]
    assert train.boxes == 3 and data.splits["val"].boxes == 1
    caches = sorted(p.name for p in (root / "labels").glob("*.optkit.cache"))
    assert len(caches) == 2 and caches[1] == "part2.optkit.cache" and caches[0].startswith("part1-")


def test_names_as_a_mapping_of_ids(tmp_path):
    data, _ = _load(_dataset(tmp_path, names={1: "dog", 0: "cat"}))
    assert data.names == ["cat", "dog"]


def test_nc_alone_names_the_classes(tmp_path):
    path = _dataset(tmp_path, names=None, nc=3)
    data, _ = _load(path)
    assert data.names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"names": {0: "cat", 2: "dog"}}, r"'names' ids must be exactly 0\.\.1.*missing 1"),
        ({"names": {"0": "cat", "1": "dog"}}, r"'names' id '0' is not a whole number"),
        ({"names": ["cat", "dog"], "nc": 3}, r"'nc' is 3 but 'names' lists 2 classes"),
        ({"names": None}, r"no 'names' or 'nc'"),
        ({"names": [], "nc": None}, r"'names' lists no classes"),
        ({"names": None, "nc": 0}, r"'nc' must be a whole number of classes >= 1"),
        ({"names": "cat dog"}, r"'names' must be a list or a mapping"),
        ({"val": None}, r"no 'val' split"),
        ({"val": "images/nothere"}, r"'val': .*images/nothere does not exist"),
        ({"val": []}, r"'val' is an empty list"),
        ({"val": 3}, r"'val' must be a folder of images"),
        ({"val": "data.yaml"}, r"'val': .*data\.yaml is neither a folder nor a \.txt list"),
        ({"path": "elsewhere"}, r"'path': .*elsewhere is not a folder"),
    ],
)
def test_data_yaml_mistakes_name_the_yaml_and_key(tmp_path, config, message):
    path = _dataset(tmp_path, **config)
    with pytest.raises(DatasetError, match=message) as e:
        _load(path)
    assert str(e.value).startswith(str(path)) and not isinstance(e.value, BadLabels)


def test_an_empty_split_folder_is_refused(tmp_path):
    path = _dataset(tmp_path, val="images/empty")
    (tmp_path / "ds" / "images" / "empty" / ".hidden").mkdir(parents=True)
    _image(tmp_path / "ds" / "images" / "empty" / ".hidden" / "x.png")  # hidden folders are skipped
    (tmp_path / "ds" / "images" / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(DatasetError, match=r"'val': no images in .*images/empty"):
        _load(path)


def test_a_split_not_asked_for_is_not_read(tmp_path):
    data, lines = _load(_dataset(tmp_path, test="images/nothere"), splits=("val",))
    assert list(data.splits) == ["val"] and len(lines) == 1
    with pytest.raises(DatasetError, match=r"'test': .* does not exist"):
        _load(_dataset(tmp_path, test="images/nothere"), splits=("train", "test"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"data\.yaml: no such file"),
        ("- train\n- val\n", r"expected a mapping with train, val and names.*got list"),
        ("", r"got an empty file"),
        ("train: [a\n", r"not valid YAML at line"),
    ],
)
def test_a_yaml_that_cannot_be_used_is_one_error(tmp_path, content, message):
    path = tmp_path / "data.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        _load(path)


# ---------------------------------------------------------------------------------------------- labels


def test_label_path_replaces_the_last_images_folder():
    sep = os.sep
    assert (
        label_path(f"{sep}d{sep}images{sep}set{sep}images{sep}x.jpg")
        == f"{sep}d{sep}images{sep}set{sep}labels{sep}x.txt"
    )
    assert label_path(f"{sep}d{sep}images{sep}a{sep}b.c.PNG") == f"{sep}d{sep}labels{sep}a{sep}b.c.txt"
    assert label_path(f"{sep}d{sep}photos{sep}x.jpg") == f"{sep}d{sep}photos{sep}x.txt"  # beside the image
    assert (
        label_path(f"{sep}d{sep}myimages{sep}x.jpg") == f"{sep}d{sep}myimages{sep}x.txt"
    )  # a whole folder name


def test_nested_images_folders_map_to_the_innermost_labels(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "site1" / "images" / "a.png")
    _label(root / "images" / "train" / "site1" / "labels" / "a.txt", "1 0.5 0.5 0.2 0.2\n")
    _label(root / "labels" / "train" / "site1" / "images" / "a.txt", "0 0.5 0.5 0.9 0.9\n")  # not this one
    _image(root / "images" / "train" / "sub" / "deeper" / "b.PNG")
    _label(root / "labels" / "train" / "sub" / "deeper" / "b.txt", "0 0.1 0.1 0.1 0.1\n")
    path = _yaml(root / "data.yaml", train="images/train", val="images/train", nc=2)
    train = _load(path)[0].splits["train"]
    assert [Path(p).name for p in train.images] == ["a.png", "b.PNG"]
    assert (
        np.array_equal(train.labels[0], np.float32([[1, 0.5, 0.5, 0.2, 0.2]])) and train.labels[1][0, 0] == 0
    )


def test_missing_and_empty_label_files_are_backgrounds(tmp_path):
    path = _dataset(tmp_path, val_labels={"has": GOOD, "missing": None, "empty": "", "blank": "\n  \n"})
    val = _load(path)[0].splits["val"]
    assert [Path(p).stem for p in val.images] == ["blank", "empty", "has", "missing"]
    assert [len(x) for x in val.labels] == [0, 0, 2, 0] and all(x.shape[1] == 5 for x in val.labels)
    assert (val.boxes, val.backgrounds) == (2, 3)


def test_a_split_without_any_label_file_is_refused(tmp_path):
    path = _dataset(tmp_path, val_labels={"x": None, "y": None})
    with pytest.raises(
        DatasetError, match=r"'val': none of its 2 images has a label file .*labels.val.x\.txt"
    ):
        _load(path)


def test_coordinates_within_rounding_are_clipped(tmp_path):
    path = _dataset(tmp_path, val_labels={"v": "1 1.0009 -0.0009 0.5 1.000999\n"})
    np.testing.assert_array_equal(_load(path)[0].splits["val"].labels[0], [[1, 1, 0, 0.5, 1]])


BAD_ROWS = [
    pytest.param("0 0.5 0.5 0.2\n", r"4 columns, expected 5 \(class cx cy w h\)", id="four-columns"),
    pytest.param("0 0.5 0.5 0.2 0.2 0.9\n", r"6 columns, expected 5", id="six-columns"),
    pytest.param("0 0.1 0.1 0.2 0.1 0.2 0.2\n", r"7 columns.*segmentation polygons", id="polygon"),
    pytest.param("0 0.5 abc 0.2 0.2\n", r"cy 'abc' is not a number", id="not-a-number"),
    pytest.param("0 0.5 nan 0.2 0.2\n", r"cy 'nan' is not a finite number", id="nan"),
    pytest.param(
        "2 0.5 0.5 0.2 0.2\n", r"class 2 is outside 0\.\.1 \(the dataset has 2 classes\)", id="class>=nc"
    ),
    pytest.param("-1 0.5 0.5 0.2 0.2\n", r"class -1 is outside 0\.\.1", id="negative-class"),
    pytest.param("0.5 0.5 0.5 0.2 0.2\n", r"class '0\.5' is not an integer", id="fractional-class"),
    pytest.param("0 1.2 0.5 0.2 0.2\n", r"cx 1\.2 is outside \[0, 1\]", id="cx>1"),
    pytest.param("0 0.5 0.5 0.2 -0.01\n", r"h -0\.01 is outside \[0, 1\]", id="h<0"),
    pytest.param("0 320 240 64 48\n", r"cx 320 is outside \[0, 1\]", id="pixels"),
    pytest.param("0 0.5 0.5 0 0.2\n", r"box of zero or negative size \(w 0, h 0\.2\)", id="zero-width"),
    pytest.param(
        "0 0.5 0.5 0.2 -0.0005\n", r"box of zero or negative size", id="negative-height-in-tolerance"
    ),
    pytest.param("0 0.5 0.5 0.25 0.5\n", r"duplicate of line 1", id="duplicate"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_every_bad_row_kind_stops_the_load_naming_file_and_line(tmp_path, row, message):
    # line 1 good, line 2 (blank) skipped, line 3 bad; another file with two bad rows
    path = _dataset(
        tmp_path,
        train_labels={"a": "0 0.5 0.5 0.25 0.5\n\n" + row, "b": GOOD, "c": "5 0.5 0.5 0.1 0.1\n0 2 2 2 2\n"},
    )
    lines = []
    with pytest.raises(BadLabels, match=message) as e:
        load_yolo_data(path, log=lines.append)
    label = tmp_path / "ds" / "labels" / "train" / "a.txt"
    assert str(e.value).startswith(f"{label}:3: ")
    assert e.value.first.startswith(f"{label}:3: ") and (e.value.count, e.value.files, e.value.images) == (
        3,
        2,
        2,
    )
    assert "and 2 more problems: 3 in 2 files of the 'train' split of" in str(e.value)
    assert "drop the 2 images with problems instead" in str(e.value) and "--" not in str(e.value)
    assert lines == [lines[0]] and "3 problems in 2 images" in lines[0]  # counts logged before the error


def test_one_problem_is_worded_as_the_only_one(tmp_path):
    path = _dataset(tmp_path, val_labels={"v": GOOD + "0 0.5 0.5 0.2\n"})
    with pytest.raises(
        BadLabels, match=r"v\.txt:3: 4 columns.*\(the only problem in the 'val' split.*drop that image"
    ):
        _load(path)


def test_a_label_file_that_is_not_text_is_a_problem(tmp_path):
    path = _dataset(tmp_path, val_labels={"v": GOOD, "w": None})
    (tmp_path / "ds" / "labels" / "val" / "w.txt").write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(BadLabels, match=r"w\.txt: not a text file"):
        _load(path)


def _corrupt_images(root: Path) -> list[Path]:
    garbage = root / "images" / "val" / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    truncated = root / "images" / "val" / "truncated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the header survives: only decoding finds the loss
    for image in (garbage, truncated):
        _label(root / "labels" / "val" / f"{image.stem}.txt", GOOD)
    return [garbage, truncated]


def test_corrupt_images_stop_the_load(tmp_path):
    path = _dataset(tmp_path, val_labels={"ok": GOOD})
    garbage, truncated = _corrupt_images(tmp_path / "ds")
    with pytest.raises(BadLabels) as e:
        _load(path)
    assert str(e.value).startswith(f"{garbage}: cannot decode the image (UnidentifiedImageError")
    assert (e.value.count, e.value.files, e.value.images) == (2, 2, 2)


def test_a_truncated_jpeg_passes_verify_and_fails_decoding(tmp_path):
    _, truncated = _corrupt_images(_dataset(tmp_path).parent)
    with Image.open(truncated) as img:
        img.verify()  # passes: only decoding every pixel finds the missing data
    shape, problem = yolo_scan.image_shape(str(truncated))
    assert shape == (0, 0) and problem.file == str(truncated) and "truncated" in problem.what.lower()


def test_skip_bad_labels_drops_exactly_the_images_with_problems(tmp_path):
    path = _dataset(
        tmp_path,
        val_labels={
            "a": GOOD,
            "b": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",
            "c": "",
            "d": "9 0.5 0.5 0.2 0.2\n",
        },
    )
    garbage, truncated = _corrupt_images(tmp_path / "ds")
    data, lines = _load(path, skip_bad_labels=True)
    val = data.splits["val"]
    assert [Path(p).stem for p in val.images] == ["a", "c"]
    assert val.skipped == 4 and (val.boxes, val.backgrounds) == (2, 1)
    assert len(val.labels) == len(val.shapes) == 2
    assert lines[1].startswith("val: 2 images, 2 boxes, 1 backgrounds, 4 problems: 4 images dropped (")
    assert data.splits["train"].skipped == 0


def test_skip_bad_labels_with_every_image_bad_is_refused(tmp_path):
    path = _dataset(tmp_path, val_labels={"a": "0 2 2 2 2\n"})
    with pytest.raises(
        DatasetError, match=r"'val': every one of its 1 images has a problem .*a\.txt:1: cx 2"
    ):
        _load(path, skip_bad_labels=True)


# ---------------------------------------------------------------------------------------------- image sizes


@pytest.mark.parametrize(
    ("orientation", "upright"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))]
)
def test_exif_orientation_gives_the_upright_shape(tmp_path, orientation, upright):
    path = _dataset(tmp_path)
    image = _image(
        tmp_path / "ds" / "images" / "val" / "rotated.jpg", size=(40, 20), exif_orientation=orientation
    )
    _label(tmp_path / "ds" / "labels" / "val" / "rotated.txt", GOOD)
    val = _load(path)[0].splits["val"]
    assert val.shapes[val.images.index(str(image))] == upright == read_rgb(str(image)).size


# ---------------------------------------------------------------------------------------------- the cache


def _scans_fail(monkeypatch):
    def fail(*args):
        raise AssertionError("re-scanned although nothing changed")

    monkeypatch.setattr(yolo_scan, "scan_image", fail)


def test_second_load_reads_the_cache_without_rescanning(tmp_path, monkeypatch):
    path = _dataset(tmp_path, val_labels={"a": GOOD, "b": None, "c": "1 0.5 0.5 0.1 0.1\n"})
    first, _ = _load(path)
    _scans_fail(monkeypatch)
    second, lines = _load(path)
    for split in ("train", "val"):
        a, b = first.splits[split], second.splits[split]
        assert (
            a.images == b.images
            and a.shapes == b.shapes
            and (a.boxes, a.backgrounds) == (b.boxes, b.backgrounds)
        )
        assert all(
            np.array_equal(x, y) and y.dtype == np.float32 for x, y in zip(a.labels, b.labels, strict=True)
        )
    cache = tmp_path / "ds" / "labels" / "val.optkit.cache"
    assert lines[1] == f"val: 3 images, 3 boxes, 1 backgrounds, 0 problems (read from cache {cache})"


def test_problems_come_back_from_the_cache(tmp_path, monkeypatch):
    path = _dataset(tmp_path, val_labels={"a": "0 0.5 0.5 0.2\n", "b": GOOD})
    with pytest.raises(BadLabels) as first:
        _load(path)
    _scans_fail(monkeypatch)
    with pytest.raises(BadLabels) as second:
        _load(path)
    assert str(second.value) == str(first.value)
    assert _load(path, skip_bad_labels=True)[0].splits["val"].skipped == 1


def _count_scans(monkeypatch) -> list[str]:
    scanned, real = [], yolo_scan.scan_image

    def counting(image, label_file, nc):
        scanned.append(image)
        return real(image, label_file, nc)

    monkeypatch.setattr(yolo_scan, "scan_image", counting)
    return scanned


def test_a_changed_label_file_rescans_its_split(tmp_path, monkeypatch):
    path = _dataset(tmp_path, val_labels={"a": GOOD, "b": GOOD})
    _load(path)
    scanned = _count_scans(monkeypatch)
    label = tmp_path / "ds" / "labels" / "val" / "b.txt"
    label.write_text("1 0.5 0.5 0.3 0.3\n")  # another size
    np.testing.assert_array_equal(
        _load(path)[0].splits["val"].labels[1], np.float32([[1, 0.5, 0.5, 0.3, 0.3]])
    )
    assert len(scanned) == 2  # the val split only: train's cache still holds
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes, another modification time
    _load(path)
    assert len(scanned) == 4


def test_a_label_file_added_to_a_background_rescans(tmp_path, monkeypatch):
    path = _dataset(tmp_path, val_labels={"a": GOOD, "b": None})
    _load(path)
    _label(tmp_path / "ds" / "labels" / "val" / "b.txt", "1 0.5 0.5 0.5 0.5\n")
    assert _load(path)[0].splits["val"].boxes == 3


def test_a_changed_image_or_class_count_rescans(tmp_path, monkeypatch):
    path = _dataset(tmp_path, val_labels={"a": GOOD})
    _load(path)
    scanned = _count_scans(monkeypatch)
    _image(tmp_path / "ds" / "images" / "val" / "a.png", size=(50, 10))
    assert _load(path)[0].splits["val"].shapes == [(50, 10)] and len(scanned) == 1
    _yaml(path, train="images/train", val="images/val", names=["cat"])  # class 1 is now out of range
    with pytest.raises(BadLabels, match=r"class 1 is outside 0\.\.0"):
        _load(path)


def test_a_damaged_or_foreign_cache_is_scanned_over(tmp_path, monkeypatch):
    path = _dataset(tmp_path)
    _load(path)
    cache = tmp_path / "ds" / "labels" / "val.optkit.cache"
    scanned = _count_scans(monkeypatch)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    data, lines = _load(path)
    assert data.splits["val"].boxes == 2 and len(scanned) == 1 and "cached in" in lines[1]
    monkeypatch.setattr(yolo_scan, "SCAN_VERSION", yolo_scan.SCAN_VERSION + 1)  # written by another version
    _load(path)
    assert len(scanned) == 4  # both splits: 2 train images, 1 val


def test_an_unwritable_cache_place_still_loads(tmp_path):
    path = _dataset(tmp_path)
    cache = tmp_path / "ds" / "labels" / "val.optkit.cache"
    cache.mkdir()  # a folder where the file would go: neither readable nor replaceable (root too)
    data, lines = _load(path)
    assert data.splits["val"].boxes == 2
    assert lines[1].startswith("val: 1 images, 2 boxes") and "(scanned; not cached: cannot write" in lines[1]
    assert cache.is_dir() and not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]
