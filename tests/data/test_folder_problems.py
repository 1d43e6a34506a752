"""Data problems that used to pass silently (issue 13, defect 8): empty class folders, a class folder that
links back to the dataset, one-class datasets, 16-bit PNGs, EXIF orientation, and a --fraction too small
for a BatchNorm batch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from optkit.data.folder import ImageFolder, read_rgb
from optkit.data.loader import build_train_loader
from optkit.data.transforms import TrainTransform, ValTransform
from optkit.errors import ConfigError, DatasetError


def _write(path, colour=(10, 200, 30), size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_empty_class_folder_is_refused_naming_it(tmp_path):
    _write(tmp_path / "cat" / "0.png")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"dog.* no images") as e:
        ImageFolder(tmp_path, ValTransform(32))
    assert str(tmp_path / "dog") in str(e.value)


def test_empty_class_folder_of_a_known_class_is_refused(tmp_path):
    # the classes come from a checkpoint (val): an existing folder without images is still a mistake
    _write(tmp_path / "cat" / "0.png")
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path, ValTransform(32), classes=["cat", "dog"])


@pytest.mark.parametrize("target", ["root", "split"])
def test_class_folder_linking_back_into_the_dataset_is_refused(tmp_path, target):
    root = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            _write(root / split / name / "0.png")
    link = root / "train" / "loop"
    link.symlink_to(root if target == "root" else root / "train", target_is_directory=True)
    (root / "val" / "loop").mkdir()
    _write(root / "val" / "loop" / "0.png")
    with pytest.raises(DatasetError, match="symbolic link") as e:
        ImageFolder(root / "train", ValTransform(32))
    assert str(link) in str(e.value) and "remove" in str(e.value)


def test_class_folder_linking_elsewhere_is_read(tmp_path):
    elsewhere = tmp_path / "kept-cats"
    _write(elsewhere / "0.png")
    _write(tmp_path / "data" / "dog" / "0.png")
    (tmp_path / "data" / "cat").symlink_to(elsewhere, target_is_directory=True)
    ds = ImageFolder(tmp_path / "data", ValTransform(32))
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    # and an empty class folder is refused (the link itself is fine)
    (tmp_path / "data" / "emu").mkdir()
    with pytest.raises(DatasetError, match="emu"):
        ImageFolder(tmp_path / "data", ValTransform(32))


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.full((8, 8), 32768, dtype=np.uint16)  # half of the 16-bit range
    grey[0, 0] = 65535
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # what Pillow makes of it
    rgb = np.asarray(read_rgb(str(tmp_path / "g16.png")))
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [128, 128, 128]  # 32768 / 257 = 127.5 -> 128, not clipped to 255
    assert rgb[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((8, 16, 3), dtype=np.uint8)  # 16 wide, 8 high: red left half, blue right half
    arr[:, :8] = (255, 0, 0)
    arr[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "rotated.png", exif=exif)
    img = read_rgb(str(tmp_path / "rotated.png"))
    assert img.size == (8, 16)  # displayed upright: 8 wide, 16 high
    out = np.asarray(img)
    assert out[1, 4].tolist() == [255, 0, 0] and out[14, 4].tolist() == [0, 0, 255]  # red on top


def test_one_class_dataset_is_refused_for_training(tmp_path):
    from optkit.train.config import TrainConfig
    from optkit.train.trainer import Trainer

    for split in ("train", "val"):
        for i in range(4):
            _write(tmp_path / "d" / split / "cat" / f"{i}.png")
    cfg = TrainConfig(
        model="test-tiny",
        data=str(tmp_path / "d"),
        epochs=1,
        imgsz=32,
        batch_size=4,
        workers=0,
        project=str(tmp_path / "runs"),
    )
    with pytest.raises(DatasetError, match=r"one class \(cat\).*at least 2"):
        Trainer(cfg).run()
    assert not (tmp_path / "runs").exists()


def test_one_class_checkpoint_is_refused_for_val(tmp_path):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model
    from optkit.workflows.val import ValRequest, run_val

    for split in ("train", "val"):
        for i in range(4):
            _write(tmp_path / "d" / split / "cat" / f"{i}.png")
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=1), ["cat"], 32)
    path = save_checkpoint(ckpt, tmp_path / "one.pt")
    with pytest.raises(DatasetError, match="at least 2"):  # a one-output classifier scores 100% top-1
        run_val(ValRequest(str(path), str(tmp_path / "d"), workers=0))


def test_fraction_leaving_one_image_is_refused_with_the_minimum(tmp_path):
    for c in ("a", "b", "c"):
        for i in range(24):
            _write(tmp_path / c / f"{i}.png")
    ds = ImageFolder(tmp_path, TrainTransform(32))
    with pytest.raises(ConfigError, match=r"^fraction 0\.01 keeps 1 of 72 training images") as e:
        build_train_loader(ds, 16, 0, seed=0, fraction=0.01)  # the library names the field (no flag)
    assert "use fraction >= 0.028" in str(e.value) and e.value.values["least"] == 0.028  # 2 of 72 images
    assert e.value.fields == ("fraction",)  # the train flow words it as --fraction (tests/test_library_...)
    loader, sampler = build_train_loader(ds, 16, 0, seed=0, fraction=e.value.values["least"])
    assert len(sampler) == 2 and [len(y) for _, y in loader] == [2]  # the minimum trains


def test_fraction_per_process_needs_two_images_each(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _write(tmp_path / c / f"{i}.png")
    ds = ImageFolder(tmp_path, TrainTransform(32))
    # 3 images over 2 processes: shards of 2 and 2 (padded): trains
    build_train_loader(ds, 8, 0, seed=0, fraction=0.15, rank=0, world=2)
    with pytest.raises(ConfigError, match="at least 3 images for 2 processes"):  # 2 images: 1 each
        build_train_loader(ds, 8, 0, seed=0, fraction=0.1, rank=0, world=2)
