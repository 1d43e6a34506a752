"""Resolve `--data` to folders, and build the train/val DataLoaders.

The training order and each image's augmentation are pure functions of (seed, epoch, index):
EpochSampler yields (index, seed, epoch) keys and ImageFolder seeds the augmentation from them,
so results do not depend on the number of workers, and a resumed run repeats them exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from optkit.errors import ConfigError, DatasetError
from optkit.limits import FRACTION, ConfigFieldsError


@dataclass
class DataSpec:
    name: str  # what the user passed to --data
    root: Path
    names: list[str]  # class names, sorted folder names
    train_dir: Path
    val_dir: Path


def resolve_data(spec: str, cache_dir: Path | None = None, log=None) -> DataSpec:
    """`builtin:NAME` (generated once, then cached) or a folder with train/ and val/ class folders.
    `log(line)` receives the generation's progress lines (the flows pass their progress display)."""
    from optkit.data.folder import scan_classes
    from optkit.data.shapes import builtin_root

    if spec.startswith("builtin:"):
        root = builtin_root(spec.split(":", 1)[1], cache_dir=cache_dir, log=log)
    else:
        root = Path(spec).expanduser()
        if not root.exists():
            raise DatasetError(f"{root}: no such dataset folder")
        if not root.is_dir():
            raise DatasetError(
                f"{root} is a file; expected a dataset folder with train/ and val/ class folders"
            )
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"{root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    train, val = scan_classes(root / "train"), scan_classes(root / "val")
    if not train:
        raise DatasetError(f"{root / 'train'} has no class folders (expected {root}/train/<class>/<image>)")
    if train != val:
        only = sorted(set(train) ^ set(val))
        raise DatasetError(f"{root}: train/ and val/ have different classes ({', '.join(only[:5])})")
    return DataSpec(spec, root, train, root / "train", root / "val")


def require_two_classes(names: list[str], root) -> None:
    """A classifier of one class is right about every image (top-1 is always 100%): training it or
    measuring its accuracy says nothing, so both are refused."""
    if len(names) < 2:
        raise DatasetError(
            f"{root}: one class ({', '.join(names)}); a classifier needs at least 2 classes to train or to "
            "measure top-1 (with one, every answer is right); add a class folder for each class"
        )


def default_workers() -> int:
    """Loader processes: 64 px images decode fast, and on few cores workers compete with torch's threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(8, cpus // 2)


class EpochSampler:
    """Yields (index, seed, epoch) keys in an order that depends only on (seed, epoch).

    With fraction < 1, a fixed subset (a function of the seed only) is used every epoch.
    With world > 1 (one sampler per torchrun process), the epoch's order is padded by repeating its
    head to a multiple of `world` and rank r takes positions r, r+world, ...: the shards are disjoint
    apart from the padding, cover the whole order, and stay pure functions of (seed, epoch), so resume
    is exact. With per-rank batches of batch/world, step i of all ranks together trains on the same
    images as step i of a single process.
    """

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, fraction: float = 1.0, rank: int = 0, world: int = 1
    ):
        FRACTION.check("fraction", fraction)  # a share of the dataset; a flow names its flag
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside a world of {world} processes")
        import torch

        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.rank, self.world = rank, world
        if fraction < 1:
            g = torch.Generator().manual_seed(seed)
            keep = max(1, round(n * fraction))
            self.indices = sorted(torch.randperm(n, generator=g)[:keep].tolist())
        else:
            self.indices = list(range(n))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.indices) // self.world)  # ceil: the padded order split in `world` shards

    def order(self) -> list[int]:
        """The epoch's dataset indices, over all ranks, before sharding."""
        import torch

        if not self.shuffle:
            return list(self.indices)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return [self.indices[i] for i in torch.randperm(len(self.indices), generator=g).tolist()]

    def __iter__(self):
        order = self.order()
        if self.world > 1:
            padded = len(self) * self.world
            order = (order * -(-padded // len(order)))[:padded]  # repeat the head (tiny sets: several times)
            order = order[self.rank :: self.world]
        return iter([(i, self.seed, self.epoch) for i in order])


def _clamp_workers(workers: int) -> int:
    return max(0, min(workers, os.cpu_count() or 1))


def build_train_loader(
    dataset,
    batch_size: int,
    workers: int,
    seed: int,
    fraction: float = 1.0,
    rank: int = 0,
    world: int = 1,
    collate_fn=None,
):
    """(DataLoader, EpochSampler). `batch_size` is per process (rank `rank` of `world`). A last batch of
    one image is dropped: BatchNorm cannot train on it. `collate_fn` batches items (None: torch's default;
    detection passes optkit.data.detect_dataset.collate_detect)."""
    import torch
    from torch.utils.data import DataLoader

    sampler = EpochSampler(len(dataset), seed, shuffle=True, fraction=fraction, rank=rank, world=world)
    require_batch_norm_images(
        len(sampler.indices), len(dataset), fraction, world, getattr(dataset, "root", None)
    )
    workers = _clamp_workers(workers)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=len(sampler) % batch_size == 1 and len(sampler) > 1,
        collate_fn=collate_fn,
    )
    return loader, sampler


def require_batch_norm_images(kept: int, n: int, fraction: float, world: int, root=None) -> None:
    """Every process needs a batch of 2 or more images: BatchNorm cannot train on one ("Expected more
    than 1 value per channel"). A shard is ceil(kept / world) images, so kept must exceed world. Too small
    a fraction is a ConfigFieldsError over `fraction`; its values["least"] is the smallest that trains."""
    need = world + 1
    if kept >= need:
        return
    per = f" for {world} processes (2 each)" if world > 1 else ""
    why = "BatchNorm cannot train on a batch of one image"
    if n < need:
        where = root or "the training split"
        raise DatasetError(f"{where} has {n} training image(s); training needs at least {need}{per} ({why})")
    raise ConfigFieldsError(
        "{fraction} {value:g} keeps {kept} of {n} training images; training needs at least {need} "
        "images{per} ({why}): use {fraction} >= {least:g}",
        ["fraction"],
        value=fraction, kept=kept, n=n, need=need, per=per, why=why, least=min_fraction(need, n),
    )  # fmt: skip


def min_fraction(need: int, n: int) -> float:
    """The smallest fraction with 2 significant digits that keeps `need` of `n` images (rounded up)."""
    exact = need / n
    step = 10.0 ** (math.floor(math.log10(exact)) - 1)  # 2 significant digits
    return float(f"{math.ceil(round(exact / step, 9)) * step:.2g}")


def build_val_loader(dataset, batch_size: int, workers: int, collate_fn=None):
    """Val batches in dataset order; `collate_fn` as for build_train_loader."""
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=_clamp_workers(workers),
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_fn,
    )
