"""Tiny ImageFolder datasets on disk for tests (a module of its own: `from conftest import` is ambiguous
when several test folders have a conftest.py)."""

from __future__ import annotations

from pathlib import Path


def write_image_folder(root: Path, classes: list[str], per_class: int, size: int = 32, seed: int = 0) -> Path:
    """A tiny ImageFolder (train/ and val/) whose classes differ by colour, so models can learn it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30), (200, 40, 200), (30, 200, 210)]
    for split, n in (("train", per_class), ("val", max(2, per_class // 4))):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array(palette[c % len(palette)], dtype=np.float32)
                img = base + rng.normal(0, 25, (size, size, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root
