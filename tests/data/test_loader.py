"""resolve_data errors, the epoch sampler, and loader determinism across worker counts."""

from __future__ import annotations

import pytest
import torch

from optkit.data.folder import ImageFolder
from optkit.data.loader import EpochSampler, build_train_loader, resolve_data
from optkit.data.transforms import TrainTransform
from optkit.errors import ConfigError, DatasetError


def test_resolve_folder(tiny_data):
    spec = resolve_data(str(tiny_data))
    assert spec.names == ["blue", "green", "red"]
    assert spec.train_dir == tiny_data / "train" and spec.val_dir == tiny_data / "val"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "no such dataset folder"),
        (lambda root: root.write_text("x"), "is a file"),
        (lambda root: (root / "train" / "a").mkdir(parents=True), "no val/ folder"),
        (lambda root: [(root / s).mkdir(parents=True) for s in ("train", "val")], "no class folders"),
        (
            lambda root: [(root / s / c).mkdir(parents=True) for s, c in (("train", "a"), ("val", "b"))],
            "different classes",
        ),
    ],
    ids=["missing", "file", "no-val", "no-classes", "class-mismatch"],
)
def test_resolve_errors(tmp_path, make, message):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(DatasetError, match=message):
        resolve_data(str(root))


def test_unknown_builtin():
    with pytest.raises(DatasetError, match="builtin:shapes"):
        resolve_data("builtin:nope")


def test_sampler_order_is_function_of_seed_and_epoch():
    s = EpochSampler(50, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    again = EpochSampler(50, seed=1)
    again.set_epoch(1)
    assert list(again) == e1 and [k[0] for k in e0] != [k[0] for k in e1]
    assert sorted(k[0] for k in e0) == list(range(50)) and all(k[1:] == (1, 0) for k in e0)


def test_fraction_is_a_fixed_subset():
    s = EpochSampler(100, seed=3, fraction=0.2)
    subsets = []
    for epoch in range(3):
        s.set_epoch(epoch)
        subsets.append(sorted(k[0] for k in s))
    assert len(s) == 20 and subsets[0] == subsets[1] == subsets[2]
    with pytest.raises(ConfigError):
        EpochSampler(10, seed=0, fraction=0.0)


def test_workers_do_not_change_batches(tiny_data):
    ds = ImageFolder(tiny_data / "train", TrainTransform(32))
    batches = []
    for workers in (0, 2):
        loader, sampler = build_train_loader(ds, 16, workers, seed=5)
        sampler.set_epoch(3)
        batches.append([(x, y) for x, y in loader])
    for (xa, ya), (xb, yb) in zip(*batches, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_last_batch_of_one_is_dropped(tiny_data):
    ds = ImageFolder(tiny_data / "train", TrainTransform(32))  # 72 images
    loader, _ = build_train_loader(ds, 71, 0, seed=0)
    assert [len(y) for _, y in loader] == [71]
