"""A fixed, evenly spread subset of a split as preprocessed batches: what calibration and parity checks
feed a model (deterministic, no augmentation, every class represented in a class-sorted folder)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def evenly_spaced(n: int, limit: int) -> list[int]:
    """`limit` indices spread over range(n) (all of them when n <= limit)."""
    return [round(i * n / limit) for i in range(limit)] if n > limit else list(range(n))


def split_batches(
    split_dir, names: list[str], imgsz: int, preprocess: dict, limit: int, batch: int = 32
) -> list[torch.Tensor]:
    """Up to `limit` images of a split folder, with validation transforms, in batches of `batch`."""
    from optkit.data.folder import ImageFolder
    from optkit.data.transforms import ValTransform

    dataset = ImageFolder(
        split_dir, ValTransform(imgsz, mean=preprocess["mean"], std=preprocess["std"]), classes=list(names)
    )
    return list(image_batches(dataset, evenly_spaced(len(dataset), limit), batch))


def image_batches(dataset, indices: list[int], batch: int) -> Iterator[torch.Tensor]:
    import torch

    for i in range(0, len(indices), batch):
        yield torch.stack([dataset[j][0] for j in indices[i : i + batch]])
