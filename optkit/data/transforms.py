"""Image transforms with Pillow + numpy (no torchvision): training augmentation and validation resize.

Training randomness comes only from the `rng` argument, so an image's augmentation is a pure function
of the generator the dataset builds from (seed, epoch, index).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor_normalized(img: Image.Image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 HWC RGB image -> float32 CHW tensor, (x/255 - mean) / std."""
    import torch

    arr = np.asarray(img, dtype=np.float32)  # HWC, 0..255
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    shift = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    arr = arr * scale - shift
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def random_resized_box(width: int, height: int, scale, ratio, rng: np.random.Generator) -> tuple:
    """(left, top, right, bottom) of a random crop covering `scale` of the area with aspect in `ratio`.

    Same semantics as torchvision's RandomResizedCrop: 10 tries, then a central crop clamped to `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class TrainTransform:
    """Random resized crop to imgsz x imgsz, horizontal flip, to tensor, normalise."""

    def __init__(
        self,
        imgsz: int,
        scale=(0.5, 1.0),
        ratio=(3 / 4, 4 / 3),
        hflip: float = 0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        self.imgsz, self.scale, self.ratio, self.hflip = imgsz, scale, ratio, hflip
        self.mean, self.std = mean, std

    def __call__(self, img: Image.Image, rng: np.random.Generator):
        box = random_resized_box(img.width, img.height, self.scale, self.ratio, rng)
        out = img.resize((self.imgsz, self.imgsz), Image.BILINEAR, box=box)
        if rng.random() < self.hflip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor_normalized(out, self.mean, self.std)


class ValTransform:
    """Resize the shorter side to imgsz / crop_fraction, centre-crop imgsz x imgsz, to tensor, normalise."""

    def __init__(self, imgsz: int, crop_fraction: float = 1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.imgsz, self.crop_fraction, self.mean, self.std = imgsz, crop_fraction, mean, std

    def __call__(self, img: Image.Image):
        # crop the source region that maps onto the output square, then resize once
        side = min(img.width, img.height) * self.crop_fraction
        left, top = (img.width - side) / 2, (img.height - side) / 2
        box = (left, top, left + side, top + side)
        if box == (0, 0, img.width, img.height) and img.width == self.imgsz:
            out = img
        else:
            out = img.resize((self.imgsz, self.imgsz), Image.BILINEAR, box=box)
        return to_tensor_normalized(out, self.mean, self.std)
