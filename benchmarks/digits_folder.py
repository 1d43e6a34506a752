"""A real-data ImageFolder for the benchmarks, made offline: scikit-learn's bundled handwritten digits
(the UCI "Optical Recognition of Handwritten Digits" test set: 1,797 scans of digits 0-9 written by
people, 8 x 8 pixels, 17 grey levels; it ships inside scikit-learn, so nothing is downloaded).

Each digit is written as a SIZE x SIZE RGB PNG (bilinear upsampling of the 8 x 8 scan, ink dark on
white as on paper) into OUT/train/<digit>/ or OUT/val/<digit>/: a fixed, stratified VAL_SHARE of each
class is val. The layout is what `--data` takes everywhere (optkit train / val / ptq-calibrate,
benchmarks/openvino_vs_nncf.py --data).

    .venv/bin/python benchmarks/digits_folder.py /tmp/digits [--size 32]

Needs scikit-learn (installed with nncf by the bench extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

VAL_SHARE = 0.2  # of each class, chosen by a fixed permutation
SEED = 0
GREY_LEVELS = 16  # the scans' values are 0..16


def write_folder(out: Path, size: int) -> dict[str, int]:
    """Write the ImageFolder; returns the image count of each split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SEED)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        n_val = round(len(indices) * VAL_SHARE)
        for rank, index in enumerate(indices):
            split = "val" if rank < n_val else "train"
            ink = digits.images[index] / GREY_LEVELS  # 0 paper .. 1 ink
            grey = np.round(255 * (1 - ink)).astype(np.uint8)
            image = Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index:04d}.png")
            counts[split] += 1
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the ImageFolder to write (train/ and val/ class folders)")
    p.add_argument("--size", type=int, default=32, help="image side, pixels")
    args = p.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty")
    counts = write_folder(args.out, args.size)
    print(f"wrote {counts['train']} train and {counts['val']} val images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
