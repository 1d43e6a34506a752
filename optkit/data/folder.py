"""ImageFolder: `root/<class>/<image>` read with Pillow, classes sorted by folder name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optkit.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def scan_classes(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_samples(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    samples = []
    for index, name in enumerate(classes):
        folder = Path(root) / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        samples.extend((str(p), index) for p in files)
    return samples


def read_rgb(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read image {path} ({type(e).__name__})") from None


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
