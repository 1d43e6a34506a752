"""ImageFolder: `root/<class>/<image>` read with Pillow, classes sorted by folder name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optkit.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def scan_classes(root: Path) -> list[str]:
    """The class folders of a split, sorted. A class folder that is a symbolic link back to the split or
    to a folder above it (a loop: it holds the dataset, not images of one class) is refused."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for folder in folders:
        _refuse_loop(folder, root)
    return sorted(p.name for p in folders)


def _refuse_loop(folder: Path, root: Path) -> None:
    if not folder.is_symlink():
        return
    target = folder.resolve()
    if target == root.resolve() or target in root.resolve().parents:
        raise DatasetError(
            f"{folder} is a symbolic link to {target}, which holds the dataset itself, not the images of "
            f"one class: remove the link (or point it at a folder of images)"
        )


def scan_samples(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every image, class by class. A class folder that is missing is skipped (a
    val split may hold some of a model's classes); one that holds no images is refused by name."""
    samples = []
    for index, name in enumerate(classes):
        folder = Path(root) / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(
                f"{folder}: class folder '{name}' has no images ({', '.join(IMAGE_SUFFIXES)}) directly "
                "inside; add its images or remove the folder"
            )
        samples.extend((str(p), index) for p in files)
    return samples


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # how Pillow opens 16-bit greyscale PNGs


def read_rgb(path: str):
    """The image as 8-bit RGB, turned upright by its EXIF orientation (as viewers show it)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return eight_bit(ImageOps.exif_transpose(img)).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read image {path} ({type(e).__name__})") from None


def eight_bit(img):
    """16-bit greyscale scaled to 0..255 (65535 -> 255); Pillow's own convert clips every value above
    255 to white. Mode "I" holding only 0..255 is already 8-bit in range and is left alone."""
    from PIL import Image

    if img.mode not in SIXTEEN_BIT_MODES:
        return img
    values = np.asarray(img).astype(np.float64)
    if img.mode == "I" and values.max(initial=0) <= 255:
        return Image.fromarray(values.clip(0, 255).astype(np.uint8))
    return Image.fromarray(np.rint(values / 257.0).clip(0, 255).astype(np.uint8))  # uint8 HxW: mode L


class ImageFolder:
    """A map-style dataset. Keys: an int (validation; deterministic transform) or a tuple
    (index, seed, epoch) (training; the transform gets `numpy.random.default_rng([seed, epoch, index])`).
    """

    def __init__(self, root: Path, transform, classes: list[str] | None = None, cache: bool = False):
        self.root = Path(root)
        found = scan_classes(self.root)
        if classes is not None:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DatasetError(
                    f"{self.root} has class folders the model does not know: {', '.join(unknown)}"
                )
            self.classes = list(classes)
        else:
            self.classes = found
        if not self.classes:
            raise DatasetError(f"{self.root} has no class folders (expected {self.root}/<class>/<image>)")
        self.samples = scan_samples(self.root, self.classes)
        if not self.samples:
            raise DatasetError(f"{self.root} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        # decoded up front, in the parent process, so forked loader workers share the pages
        self._cache = [np.asarray(read_rgb(path)) for path, _ in self.samples] if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        """The RGB PIL image of sample `index`."""
        from PIL import Image

        if self._cache is None:
            return read_rgb(self.samples[index][0])
        return Image.fromarray(self._cache[index])

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed, epoch = key
            rng = np.random.default_rng([seed, epoch, index])
            return self.transform(self.load(index), rng), self.targets[index]
        return self.transform(self.load(key)), self.targets[key]
