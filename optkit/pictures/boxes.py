"""Boxes drawn on images with Pillow: one image with its detections, and a grid of a batch with its boxes.

`draw_detections` draws each box as a rectangle in its class colour (a fixed palette by class index, so a
class keeps its colour in every picture) with a filled label tag, "name 0.87" (or "name" for ground truth),
above the box's top-left corner, or just inside the box where the image ends above it; tags never leave
the image. Line width and text size follow the image size. `batch_grid` lays out up to 16 images of a batch
as a near-square mosaic, each tile with its boxes, as YOLO trainers write `val_batch0_labels.jpg` and
`val_batch0_pred.jpg`; the grid's longest side is at most 1920 px. Images and boxes are numpy arrays, or
torch tensors (read through `.detach().cpu()`, so this module never imports torch).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from optkit.io import atomic_open

# 20 colours that stay apart from each other and from the grey letterbox padding (114, 114, 114): the ten
# "tab10" colours without their grey, then Kelly's colours of maximum contrast (1965) without white,
# black, greys and near-duplicates. Class c gets PALETTE[c % 20].
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#f3c300", "#875692", "#a1caf1", "#008856", "#0067a5", "#f99379", "#604e97", "#882d17", "#8db600",
    "#e25822", "#b3446c",
)  # fmt: skip
LETTERBOX_GREY = (114, 114, 114)  # what the tiles of a grid are padded with, as the letterbox pads
SEPARATOR = (255, 255, 255)  # the thin lines between the tiles of a grid
GRID_GAP = 2  # pixels of separator between two tiles
MAX_GRID_SIDE = 1920  # pixels: the longest side of a batch grid
JPEG_QUALITY = 90
PRED_MIN_SCORE = 0.25  # predictions drawn in a grid: val keeps scores down to 0.001, far too many to read
MIN_FONT_PX = 11  # text smaller than this is hard to read on a photo


def class_color(c: int) -> tuple[int, int, int]:
    """The RGB colour of class index `c`."""
    h = PALETTE[int(c) % len(PALETTE)]
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def class_name(names: Sequence[str] | Mapping[int, str] | None, c: int) -> str:
    """The name of class `c` from a list or an {index: name} dict; the index itself where it has none."""
    c = int(c)
    if isinstance(names, Mapping):
        return str(names.get(c, c))
    if names is not None and 0 <= c < len(names):
        return str(names[c])
    return str(c)


def text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light fills, white on dark ones (luma, ITU-R BT.601 weights, 0-255)."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luma > 150 else (255, 255, 255)


def default_line_width(width: int, height: int) -> int:
    """Box outline width in pixels: 1 below ~200 px images, 2 at 256, 3 at 640, 6 at 1920."""
    return round(1 + (width + height) / 2 / 400)


def default_font_size(width: int, height: int) -> int:
    """Label text height in pixels: 2.2 % of the mean side (14 at 640), at least MIN_FONT_PX."""
    return max(MIN_FONT_PX, round(0.022 * (width + height) / 2))


@functools.lru_cache(maxsize=16)
def label_font(size: int):
    """Pillow's built-in font at `size` pixels: Aileron (Pillow >= 10.1 built with FreeType), else the
    fixed-size bitmap font, the only one older Pillow (no `size` argument) or one without FreeType has."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # no size argument (Pillow 10.0) or no FreeType
        return ImageFont.load_default()


def label_rect(
    box: Sequence[float], tag_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Where a box's label tag of (width, height) goes: (x0, y0, x1, y1), inclusive pixel corners, above
    the box's top-left corner, or inside its top where the image ends above it; moved left where the
    image ends on the right. Always inside the image (a tag larger than the image starts at its corner)."""
    (tw, th), (w, h) = tag_size, image_size
    x0 = min(max(int(box[0]), 0), max(w - tw, 0))
    y0 = int(box[1]) - th
    if y0 < 0:  # no room above the box: inside its top edge
        y0 = int(box[1])
    y0 = min(max(y0, 0), max(h - th, 0))
    return x0, y0, min(x0 + tw, w) - 1, min(y0 + th, h) - 1


def draw_detections(
    image: Image.Image,
    boxes,
    classes,
    names: Sequence[str] | Mapping[int, str] | None,
    scores=None,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """A copy of `image` (as RGB) with each box drawn: `boxes` [n, 4] (x1, y1, x2, y2) in the image's
    pixels, `classes` [n] class indices, `scores` [n] or None (ground truth: the tag says the name only).
    Rectangles first, then all tags (by rising score), so no outline crosses a tag and the best-scored tag
    is on top; parts of boxes outside the image are cut.
    `line_width` / `font_size` in pixels default to ones that follow the image size."""
    out = image.convert("RGB")  # a copy, also when the image is RGB already
    boxes = _numpy(boxes, np.float64).reshape(-1, 4)
    classes = _numpy(classes, np.float64).reshape(-1).round().astype(np.int64)
    scores = None if scores is None else _numpy(scores, np.float64).reshape(-1)
    n = len(boxes)
    if len(classes) != n or (scores is not None and len(scores) != n):
        got = f"{len(classes)} classes" + ("" if scores is None else f", {len(scores)} scores")
        raise ValueError(f"draw_detections: {n} boxes but {got}")
    w, h = out.size
    lw = line_width or default_line_width(w, h)
    font = label_font(font_size or default_font_size(w, h))
    draw = ImageDraw.Draw(out)
    shown = []
    for i in range(n):
        rect = _clipped(boxes[i], w, h)
        if rect is not None:
            draw.rectangle(rect, outline=class_color(classes[i]), width=lw)
            shown.append((i, rect))
    if scores is not None:  # the best-scored tag last, on top where tags overlap
        shown.sort(key=lambda item: scores[item[0]])
    for i, rect in shown:
        text = class_name(names, classes[i]) + ("" if scores is None else f" {scores[i]:.2f}")
        _draw_tag(draw, text, rect, class_color(classes[i]), font, (w, h))
    return out


def _clipped(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
    """The box as integer pixel corners inside a w x h image, or None where nothing of it is inside."""
    if not np.isfinite(box).all():
        return None
    x1, y1, x2, y2 = box
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        return None
    x1, x2 = (int(round(min(max(v, 0), w - 1))) for v in (x1, x2))
    y1, y2 = (int(round(min(max(v, 0), h - 1))) for v in (y1, y2))
    return x1, y1, max(x1, x2), max(y1, y2)  # PIL refuses x2 < x1 (a box given as x2, y2, x1, y1)


def _draw_tag(draw: ImageDraw.ImageDraw, text: str, rect, color, font, image_size) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 5)  # pixels of fill around the text
    tag = label_rect(rect, (right - left + 2 * pad, bottom - top + 2 * pad), image_size)
    draw.rectangle(tag, fill=color)
    draw.text((tag[0] + pad - left, tag[1] + pad - top), text, fill=text_color(color), font=font)


def batch_grid(
    images,
    per_image: Sequence[tuple],
    names: Sequence[str] | Mapping[int, str] | None,
    max_images: int = 16,
    captions: Sequence[str] | None = None,
) -> Image.Image:
    """A near-square mosaic of the first `max_images` images, each with its boxes drawn.

    `images`: a float tensor or array [B, 3, S, S] in [0, 1] (the detection batch layout), or a list of
    PIL images of any sizes. `per_image[i]` = (boxes [n, 4] x1 y1 x2 y2 in image i's pixels, classes [n],
    scores [n] or None); see `targets_by_image` / `predictions_by_image`. `captions[i]` (a file name, an
    index), if given, is written at the tile's bottom-left. Tiles are square, `cols = ceil(sqrt(n))`
    across, GRID_GAP px of white between them; each image is scaled to its tile (aspect kept, grey pad
    right/below) before the boxes are drawn, so lines and text stay sharp however much the batch shrinks.
    """
    pictures = _as_pictures(images, max_images)
    n = len(pictures)
    if n == 0:
        raise ValueError("batch_grid: no images")
    if len(per_image) < n:
        raise ValueError(f"batch_grid: {n} images but boxes for {len(per_image)}")
    if captions is not None and len(captions) < n:
        raise ValueError(f"batch_grid: {n} images but {len(captions)} captions")
    cols, rows = grid_shape(n)
    tile = tile_side(max(max(p.size) for p in pictures), cols)
    size = (cols * tile + (cols - 1) * GRID_GAP, rows * tile + (rows - 1) * GRID_GAP)
    grid = Image.new("RGB", size, SEPARATOR)
    for i, picture in enumerate(pictures):
        boxes, classes, scores = per_image[i]
        drawn = _tile(picture, tile, boxes, classes, scores, names)
        if captions is not None:
            _caption(drawn, str(captions[i]))
        r, c = divmod(i, cols)
        grid.paste(drawn, (c * (tile + GRID_GAP), r * (tile + GRID_GAP)))
    return grid


def grid_shape(n: int) -> tuple[int, int]:
    """(columns, rows) of a grid of n tiles: as square as it gets, never taller than wide."""
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def tile_side(image_side: int, cols: int) -> int:
    """A tile's side in pixels: the images' own, or smaller so that the grid's width (its longest side)
    stays within MAX_GRID_SIDE."""
    return max(1, min(image_side, (MAX_GRID_SIDE - (cols - 1) * GRID_GAP) // cols))


def _tile(picture: Image.Image, tile: int, boxes, classes, scores, names) -> Image.Image:
    scale = tile / max(picture.size)  # tile pixels per image pixel
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    canvas = Image.new("RGB", (tile, tile), LETTERBOX_GREY)
    canvas.paste(picture.convert("RGB").resize(size, Image.Resampling.BILINEAR), (0, 0))
    boxes = _numpy(boxes, np.float64).reshape(-1, 4) * scale
    return draw_detections(canvas, boxes, classes, names, scores)


def _caption(tile: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(tile)
    font = label_font(default_font_size(*tile.size))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 5)
    y0 = tile.height - (bottom - top) - 2 * pad
    draw.rectangle((0, y0, right - left + 2 * pad, tile.height - 1), fill=(0, 0, 0))
    draw.text((pad - left, y0 + pad - top), text, fill=(255, 255, 255), font=font)


def _as_pictures(images, max_images: int) -> list[Image.Image]:
    """The first `max_images` images as PIL images: a [B, 3, H, W] float batch in [0, 1] becomes 8-bit RGB."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, Sequence) and all(isinstance(im, Image.Image) for im in images):
        return list(images[:max_images])
    batch = _numpy(images[:max_images], np.float32)
    if batch.ndim != 4 or batch.shape[1] != 3:
        shape = list(batch.shape)
        raise ValueError(f"batch_grid: images must be [B, 3, H, W] or PIL images, got shape {shape}")
    pixels = (np.nan_to_num(batch).clip(0.0, 1.0) * 255.0).round().astype(np.uint8)  # [0, 1] -> 0..255
    return [Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0)), "RGB") for p in pixels]


def targets_by_image(targets, batch: int, size: int) -> list[tuple[np.ndarray, np.ndarray, None]]:
    """The loaders' targets [M, 6] (batch_index, class, cx, cy, w, h; normalised to the S x S input) as one
    (boxes [n, 4] x1 y1 x2 y2 in input pixels, classes [n], None) per image of the batch, for batch_grid."""
    rows = _numpy(targets, np.float64).reshape(-1, 6)
    out = []
    for b in range(batch):
        mine = rows[rows[:, 0].round() == b]
        cx, cy, w, h = (mine[:, 2:6] * size).T  # normalised -> input pixels
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        out.append((boxes, mine[:, 1].round().astype(np.int64), None))
    return out


def predictions_by_image(predictions, min_score: float = PRED_MIN_SCORE) -> list[tuple]:
    """NMS output, one [n, 6] (x1, y1, x2, y2, score, class) per image (optkit.measure.nms), as one
    (boxes, classes, scores) per image for batch_grid, keeping scores >= `min_score`."""
    out = []
    for p in predictions:
        p = _numpy(p, np.float64).reshape(-1, 6)
        p = p[p[:, 4] >= min_score]
        out.append((p[:, :4], p[:, 5].round().astype(np.int64), p[:, 4]))
    return out


def save_jpg(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` as a JPEG (quality 90) atomically: the previous file, or nothing, if the write fails
    (optkit.io.WriteError says why). Missing folders are made, as every optkit output's are."""
    with atomic_open(path, "wb") as f:
        image.convert("RGB").save(f, format="JPEG", quality=JPEG_QUALITY)


def _numpy(x, dtype) -> np.ndarray:
    """A numpy copy of an array, a list, or a torch tensor (on any device, without importing torch)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)
