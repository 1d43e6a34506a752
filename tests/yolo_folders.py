"""Tiny YOLO-format detection datasets on disk for tests (a module of its own, as image_folders.py: the
detection tests and the bad-input matrix both build them).

Each image is a flat or noisy background with 1-3 objects that do not overlap: class 0 a filled rectangle
(red), class 1 a filled ellipse (blue), so a tiny detector can tell them apart. Every label is exact: the
object's pixel extent (Pillow fills both end pixels of [x0, x1]), as (class, cx, cy, w, h) normalised by
the image's width and height. Every 6th image is a background (no objects, no label file).
"""

from __future__ import annotations

from pathlib import Path

SIZE = (80, 60)  # pixels (width, height): not square, so a letterbox pads and scales
COLOURS = ((220, 40, 40), (40, 70, 220))  # class 0 rectangle, class 1 ellipse
NAMES = ["rect", "ellipse"]


def draw_image(rng, size=SIZE, noisy: bool = False, objects: int | None = None):
    """(PIL image, labels float32 [n, 5]) of one scene; `objects` None: 1-3."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = size
    base = rng.integers(90, 170, 3).astype(np.float32)
    pixels = np.broadcast_to(base, (h, w, 3)).copy()
    if noisy:
        pixels += rng.normal(0, 12, (h, w, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    rows = []
    count = int(rng.integers(1, 4)) if objects is None else objects
    for _ in range(count):
        box = _free_box(rng, w, h, boxes)
        if box is None:
            continue
        cls = int(rng.integers(0, 2))
        x0, y0, x1, y1 = box  # inclusive pixel extent
        shape = draw.rectangle if cls == 0 else draw.ellipse
        shape([x0, y0, x1, y1], fill=COLOURS[cls])
        boxes.append(box)
        bw, bh = x1 + 1 - x0, y1 + 1 - y0  # pixels covered, end pixels included
        rows.append([cls, (x0 + bw / 2) / w, (y0 + bh / 2) / h, bw / w, bh / h])
    return image, np.array(rows, np.float32).reshape(-1, 5)


def _free_box(rng, w: int, h: int, taken: list) -> tuple[int, int, int, int] | None:
    """A box of 12-30 px per side that overlaps no taken box (2 px apart), or None after 50 tries."""
    for _ in range(50):
        bw, bh = (int(v) for v in rng.integers(12, 31, 2))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        box = (x0, y0, x0 + bw - 1, y0 + bh - 1)
        if all(
            box[0] > t[2] + 2 or box[2] < t[0] - 2 or box[1] > t[3] + 2 or box[3] < t[1] - 2 for t in taken
        ):
            return box
    return None


def label_text(labels) -> str:
    return "".join(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for c, cx, cy, bw, bh in labels)


def write_yolo_dataset(
    root: Path, n_train: int = 16, n_val: int = 6, names=NAMES, seed: int = 0, size=SIZE
) -> Path:
    """images/{train,val}/NNN.png, labels/{train,val}/NNN.txt and data.yaml (no `path`: relative to the
    yaml); returns the data.yaml. Half of the images have a noisy background."""
    import numpy as np
    import yaml

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            background = i % 6 == 5
            image, labels = draw_image(rng, size, noisy=i % 2 == 1, objects=0 if background else None)
            image.save(root / "images" / split / f"{i:03d}.png")
            if not background:
                (root / "labels" / split / f"{i:03d}.txt").write_text(label_text(labels))
    spec = {"train": "images/train", "val": "images/val", "names": list(names)}
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path


def truth_boxes(label_file: Path, width: int, height: int):
    """The rows of a label file (none if it is missing) as float [n, 5] (class, x1, y1, x2, y2) in pixels of
    a width x height image."""
    import numpy as np

    rows = np.loadtxt(label_file, ndmin=2) if label_file.is_file() else np.zeros((0, 5))
    cls, cx, cy, w, h = rows.T
    return np.stack(
        [cls, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1
    )


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
