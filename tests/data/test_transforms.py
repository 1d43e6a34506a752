"""Training and validation transforms (Pillow + numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainTransform,
    ValTransform,
    random_resized_box,
)


def _img(w=48, h=40, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_train_transform_shape_dtype_and_determinism():
    t = TrainTransform(32)
    img = _img()
    a = t(img, np.random.default_rng(1))
    b = t(img, np.random.default_rng(1))
    c = t(img, np.random.default_rng(2))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hflip_one_flips_exactly():
    img = _img(32, 32)
    no_crop = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    plain = TrainTransform(32, hflip=0.0, **no_crop)(img, np.random.default_rng(0))
    flipped = TrainTransform(32, hflip=1.0, **no_crop)(img, np.random.default_rng(0))
    assert torch.equal(flipped, plain.flip(-1))


def test_random_resized_box_stays_inside_and_respects_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_box(100, 60, (0.3, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 60
    # impossible aspect range: falls back to a central crop clamped to the ratio
    assert random_resized_box(100, 10, (0.99, 1.0), (1.0, 1.0), rng) == (45, 0, 55, 10)


def test_val_transform_centre_crops_non_square_input():
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 16:48] = 255  # the central 32 columns are white
    out = ValTransform(32)(Image.fromarray(arr))
    white = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, white[:, None, None].expand(3, 32, 32), atol=1e-5)


def test_normalisation_of_constant_colour():
    img = Image.new("RGB", (32, 32), (255, 0, 128))
    out = ValTransform(32)(img)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    assert torch.allclose(out[:, 5, 5], expected, atol=1e-5)


@pytest.mark.parametrize("crop_fraction", [1.0, 0.875])
def test_val_transform_deterministic(crop_fraction):
    t = ValTransform(32, crop_fraction=crop_fraction)
    img = _img(50, 70)
    assert torch.equal(t(img), t(img))
