"""ImageFolder reading, class handling and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optkit.data.folder import ImageFolder
from optkit.data.transforms import TrainTransform, ValTransform
from optkit.errors import DatasetError


def _write(path, colour=(10, 200, 30), size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_reads_all_formats_and_sorted_classes(tmp_path):
    for i, ext in enumerate(["jpg", "png", "bmp", "webp", "JPEG"]):
        _write(tmp_path / ("b" if i % 2 else "a") / f"{i}.{ext}")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, ValTransform(32))
    assert ds.classes == ["a", "b"] and len(ds) == 5
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0


def test_empty_folder_and_no_images(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        ImageFolder(tmp_path, ValTransform(32))
    (tmp_path / "cat").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path, ValTransform(32))
    with pytest.raises(DatasetError, match="no such dataset folder"):
        ImageFolder(tmp_path / "missing", ValTransform(32))


def test_unknown_class_against_given_list(tmp_path):
    _write(tmp_path / "cat" / "0.png")
    _write(tmp_path / "zebra" / "0.png")
    with pytest.raises(DatasetError, match="zebra"):
        ImageFolder(tmp_path, ValTransform(32), classes=["cat", "dog"])


def test_corrupt_image_names_the_file(tmp_path):
    _write(tmp_path / "cat" / "0.png")
    bad = tmp_path / "cat" / "1.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = ImageFolder(tmp_path, ValTransform(32))
    with pytest.raises(DatasetError, match="1.png"):
        ds[1]


def test_training_key_seeds_augmentation_and_cache_matches(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        path = tmp_path / "c" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    plain = ImageFolder(tmp_path, TrainTransform(32))
    cached = ImageFolder(tmp_path, TrainTransform(32), cache=True)
    a, _ = plain[(2, 7, 1)]
    assert torch.equal(a, plain[(2, 7, 1)][0])
    assert torch.equal(a, cached[(2, 7, 1)][0])
    assert not torch.equal(a, plain[(2, 7, 2)][0])  # another epoch, another augmentation
