"""Detection image geometry and augmentation (numpy, Pillow, and OpenCV for the affine warp): letterbox,
mosaic of 4, random affine, HSV jitter and horizontal flip, each moving the boxes with the pixels.

Boxes travel between the steps as pixel corners (x1, y1, x2, y2) in continuous image coordinates: pixel
column i spans [i, i + 1), so a normalised label times the image width is such a coordinate. Pillow's
resize uses the same convention (warp_affine converts OpenCV's), so a box and the pixels it covers move
together.

Randomness comes only from the `rng` arguments: the dataset seeds one generator per (seed, epoch, index),
so an image's augmentation is a pure function of its key and a resumed run repeats it exactly. The design
is YOLOv8's (mosaic, then affine with a -S/2 border, HSV, flip), written from its description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from optkit.errors import DatasetError
from optkit.limits import Bounds

PAD_VALUE = 114  # grey of letterbox padding and of everything outside a mosaic or an affine's source
MIN_BOX_PX = 2.0  # pixels: a box this narrow or low after augmentation is dropped
MIN_AREA_KEPT = 0.1  # a box keeping no more than this share of its area (the rest cut off) is dropped
MAX_ASPECT = 100.0  # a box this many times longer than wide (or wider than long) is dropped

_PROBABILITY = Bounds(0, 1, integer=False)
_BOUNDS = {
    "hsv_h": Bounds(0, 0.5, integer=False),  # a share of the hue circle: 0.5 already reaches every hue
    "hsv_s": _PROBABILITY,  # gains in [1 - s, 1 + s]: above 1 some would be negative
    "hsv_v": _PROBABILITY,
    "degrees": Bounds(0, 180, integer=False),
    "translate": Bounds(0, 0.5, integer=False),  # a share of the output side: 0.5 moves the centre to an edge
    "scale": Bounds(0, 1, integer=False, high_open=True),  # gains in [1 - scale, 1 + scale], kept above 0
    "shear": Bounds(0, 45, integer=False),  # degrees
    "fliplr": _PROBABILITY,
    "mosaic": _PROBABILITY,
}


@dataclass(frozen=True)
class Augment:
    """Training augmentation strengths, YOLOv8's defaults."""

    hsv_h: float = 0.015  # hue shift, up to +- this share of the hue circle (wraps around)
    hsv_s: float = 0.7  # saturation gain in [1 - hsv_s, 1 + hsv_s]
    hsv_v: float = 0.4  # value (brightness) gain in [1 - hsv_v, 1 + hsv_v]
    degrees: float = 0.0  # rotation, +- degrees
    translate: float = 0.1  # shift, +- this share of the output side
    scale: float = 0.5  # zoom gain in [1 - scale, 1 + scale]
    shear: float = 0.0  # shear, +- degrees
    fliplr: float = 0.5  # probability of a horizontal flip
    mosaic: float = 1.0  # probability of a mosaic while mosaic is on (the dataset's mosaic_epochs)

    def __post_init__(self):
        for field in fields(self):
            _BOUNDS[field.name].check(field.name, getattr(self, field.name))


# ---- letterbox ----------------------------------------------------------------------------------------


def letterbox(img, size: int):
    """(size x size x 3 uint8 array, scale, (pad_x, pad_y)): `img` (PIL or HxWx3 uint8) resized so its long
    side is `size` (bilinear), centred on grey 114. Original pixel x lands at x * scale + pad_x."""
    from PIL import Image

    pil = _as_pil(img)
    w, h = pil.size
    scale = size / max(w, h)
    new_w, new_h = _fitted(w, scale, size), _fitted(h, scale, size)
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = np.asarray(pil)
    return out, scale, (pad_x, pad_y)


def resize_long_side(img, size: int) -> np.ndarray:
    """`img` (PIL or HxWx3 uint8) as an HxWx3 uint8 array whose long side is `size`, aspect kept."""
    from PIL import Image

    pil = _as_pil(img)
    w, h = pil.size
    scale = size / max(w, h)
    new_wh = (_fitted(w, scale, size), _fitted(h, scale, size))
    if new_wh != (w, h):
        pil = pil.resize(new_wh, Image.Resampling.BILINEAR)
    return np.asarray(pil)


def letterbox_boxes(labels, scale: float, pad, orig_wh, size: int) -> np.ndarray:
    """Labels [n, 5] (class, cx, cy, w, h) normalised to an image of `orig_wh` (width, height) -> the same
    boxes normalised to its size x size letterbox made with `scale` and `pad`."""
    labels = _label_rows(labels).astype(np.float64)
    w0, h0 = orig_wh
    out = labels.copy()
    out[:, 1] = (labels[:, 1] * w0 * scale + pad[0]) / size
    out[:, 2] = (labels[:, 2] * h0 * scale + pad[1]) / size
    out[:, 3] = labels[:, 3] * w0 * scale / size
    out[:, 4] = labels[:, 4] * h0 * scale / size
    return out.astype(np.float32)


def unletterbox_xyxy(boxes, scale: float, pad, orig_wh=None):
    """Boxes [n, >=4] (x1, y1, x2, y2, ...) in letterbox pixels -> pixels of the original image (numpy or
    torch, returned as given; columns after the 4th, e.g. score and class, untouched). With `orig_wh`
    (width, height) the corners are clipped to the original image."""
    out = boxes.clone() if hasattr(boxes, "clone") else np.array(boxes, dtype=np.float64)
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / scale
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / scale
    if orig_wh is not None:
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, orig_wh[0])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, orig_wh[1])
    return out


def _as_pil(img):
    from PIL import Image

    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise DatasetError(
            f"expected an RGB image as an HxWx3 uint8 array, got {arr.dtype} {list(arr.shape)}"
        )
    return Image.fromarray(arr)


def _fitted(side: int, scale: float, size: int) -> int:
    """A side after scaling, in whole pixels, at least 1 and at most `size` (the long side is exact)."""
    return min(size, max(1, round(side * scale)))


# ---- boxes in pixels ----------------------------------------------------------------------------------


def _label_rows(labels) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32).reshape(-1, 5)


def labels_to_xyxy(labels, width, height, offset=(0.0, 0.0)):
    """(classes [n], corners [n, 4] in pixels): normalised (class, cx, cy, w, h) rows of a width x height
    image whose top-left corner sits at `offset` (pixels). Sizes and offsets are numbers, or arrays [n]
    giving each row its own image (a mosaic's four)."""
    labels = _label_rows(labels).astype(np.float64)
    cx, cy = labels[:, 1] * width + offset[0], labels[:, 2] * height + offset[1]
    half_w, half_h = labels[:, 3] * width / 2, labels[:, 4] * height / 2
    return labels[:, 0].copy(), np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def xyxy_to_labels(classes, boxes, size: int) -> np.ndarray:
    """Labels [n, 5] float32 (class, cx, cy, w, h) normalised to a size x size image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(boxes), 5), np.float64)
    out[:, 0] = classes
    out[:, 1] = (boxes[:, 0] + boxes[:, 2]) / 2 / size
    out[:, 2] = (boxes[:, 1] + boxes[:, 3]) / 2 / size
    out[:, 3] = (boxes[:, 2] - boxes[:, 0]) / size
    out[:, 4] = (boxes[:, 3] - boxes[:, 1]) / size
    return out.astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Which boxes to keep (bool [n]): `after` (clipped, pixels) at least MIN_BOX_PX wide and high, keeping
    more than MIN_AREA_KEPT of `before`'s area (the whole box, transformed, not clipped), and no thinner
    than 1:MAX_ASPECT. Slivers left by a crop carry too little of the object to learn from."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    eps = 1e-9
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    kept_area = w2 * h2 / (w1 * h1 + eps)
    return (w2 > MIN_BOX_PX) & (h2 > MIN_BOX_PX) & (kept_area > MIN_AREA_KEPT) & (aspect < MAX_ASPECT)


# ---- mosaic -------------------------------------------------------------------------------------------


def mosaic4(images, labels, size: int, rng: np.random.Generator):
    """Four images around a random centre on a 2*size square canvas of grey 114.

    The centre is uniform in [size/2, 3*size/2]^2; image k goes into quadrant k (top-left, top-right,
    bottom-left, bottom-right) with its corner on the centre, cropped where it leaves the canvas. Returns
    (canvas, classes [n], whole boxes [n, 4], visible boxes [n, 4]): the visible box is the whole one
    clipped to the canvas, the part of the object that was drawn.
    """
    side = 2 * size
    canvas = np.full((side, side, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, size=2))
    places = []  # (width, height, left, top) of each image on the canvas
    for quadrant, img in enumerate(images):
        h, w = img.shape[:2]
        left = xc - w if quadrant in (0, 2) else xc
        top = yc - h if quadrant in (0, 1) else yc
        _paste(canvas, img, left, top)
        places.append((w, h, left, top))
    rows = [_label_rows(r) for r in labels]
    # every row's own image placement, so the four label sets convert in one call
    w, h, left, top = np.repeat(np.array(places, np.float64), [len(r) for r in rows], axis=0).T
    classes, whole = labels_to_xyxy(np.concatenate(rows), w, h, offset=(left, top))
    return canvas, classes, whole, whole.clip(0, side)


def _paste(canvas: np.ndarray, img: np.ndarray, left: int, top: int) -> None:
    """Draw `img` on `canvas` with its top-left corner at (left, top), cropped to the canvas."""
    h, w = img.shape[:2]
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + w, canvas.shape[1]), min(top + h, canvas.shape[0])
    if x2 > x1 and y2 > y1:
        canvas[y1:y2, x1:x2] = img[y1 - top : y2 - top, x1 - left : x2 - left]


# ---- random affine ------------------------------------------------------------------------------------


def affine_matrix(in_w: int, in_h: int, out_size: int, hyp: Augment, rng: np.random.Generator) -> np.ndarray:
    """3x3 matrix from input to output pixels: the input's centre to the origin, then rotation and zoom,
    shear, and a move to the output's centre +- translate * out_size. A 2S mosaic into an S output thus
    shows the canvas' middle S x S at zoom 1 (YOLO's border of -S/2)."""
    angle = math.radians(rng.uniform(-hyp.degrees, hyp.degrees))
    zoom = rng.uniform(1 - hyp.scale, 1 + hyp.scale)
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    shear_x, shear_y = (math.tan(math.radians(a)) for a in rng.uniform(-hyp.shear, hyp.shear, size=2))
    tx, ty = (0.5 + rng.uniform(-hyp.translate, hyp.translate, size=2)) * out_size
    # shear [[1, shear_x], [shear_y, 1]] times rotation-and-zoom [[cos, -sin], [sin, cos]], written out
    # (a per-item cost: 4 matrices and 3 products took 25 us), then the centre moved to (tx, ty)
    a, b = cos + shear_x * sin, shear_x * cos - sin
    c, d = sin + shear_y * cos, cos - shear_y * sin
    cx, cy = in_w / 2, in_h / 2
    return np.array([[a, b, tx - a * cx - b * cy], [c, d, ty - c * cx - d * cy], [0, 0, 1]])


def warp_affine(img: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """`img` under `matrix` (input -> output pixels) in an out_size square: OpenCV's bilinear warp, grey
    114 where no input pixel lands. As YOLO's own loaders warp (no antialiasing: a zoom of 0.5 samples
    every other pixel), and 3x faster than torch's antialiased resize of the same window here (20-25
    against 50-80 us for a 192 px mosaic into 96 px; Pillow's affine 140-200 us).

    OpenCV puts pixel centres on whole coordinates where this module puts them at i + 0.5 (module
    docstring), so the matrix is moved half a pixel on both sides: the boxes follow `matrix` exactly."""
    cv2 = _cv2()
    centred = matrix[:2].copy()  # x -> M(x + 0.5) - 0.5: the same map between pixel centres
    centred[:, 2] += (matrix[:2, 0] + matrix[:2, 1] - 1) / 2
    return cv2.warpAffine(
        img, centred[:2], (out_size, out_size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3
    )


def _cv2():
    """OpenCV, single-threaded: its warps here take microseconds, and its own thread pool would compete
    with torch's threads and with loader workers for the same cores."""
    import cv2

    cv2.setNumThreads(0)
    return cv2


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The boxes' corners under `matrix`, and the axis-aligned box around them ([n, 4] pixels)."""
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 4, 2)  # [n, 4 corners, (x, y)]
    moved = corners @ matrix[:2, :2].T + matrix[:2, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).reshape(-1, 4)


def random_affine(img, classes, whole, visible, out_size: int, hyp: Augment, rng: np.random.Generator):
    """(image out_size^2 x 3, classes [k], boxes [k, 4] pixels): `img` zoomed, moved (and rotated or
    sheared when asked) into an out_size square; `visible` boxes (the drawn part of each object) moved
    with it and clipped to the output, dropped when box_candidates says the output kept too little of
    the `whole` box."""
    h, w = img.shape[:2]
    matrix = affine_matrix(w, h, out_size, hyp, rng)
    out = warp_affine(img, matrix, out_size)
    if len(classes) == 0:
        return out, classes, np.zeros((0, 4))
    moved = transform_boxes(np.concatenate([visible, whole]), matrix)  # one pass for both sets
    boxes = moved[: len(classes)].clip(0, out_size)
    keep = box_candidates(moved[len(classes) :], boxes)
    return out, classes[keep], boxes[keep]


# ---- colour and flip ----------------------------------------------------------------------------------


def hsv_jitter(img: np.ndarray, hyp: Augment, rng: np.random.Generator) -> np.ndarray:
    """HSV jitter applied in RGB, without converting: hue turned by up to +- hsv_h of the circle (a
    rotation about the grey axis, so it wraps), saturation and value scaled by gains in [1 - hsv_s,
    1 + hsv_s] and [1 - hsv_v, 1 + hsv_v], clipped to 0..255.

    A pixel's value V is its largest channel and its saturation the channels' distance below V relative
    to V, so scaling saturation by g keeps V and the hue and moves each channel c to V - g (V - c);
    scaling value scales all three. Several times cheaper than a round trip through Pillow's HSV (0.35 ms
    per 96 px image here). Grey pixels stay grey.

    The sums run on channel planes ([3, H*W]: each step a contiguous pass; 0.04 ms per 96 px image
    against 0.10 ms on interleaved pixels), and the result is an HxWx3 view of its planes: the train
    collate reads any strides, so nothing copies it back to interleaved pixels."""
    hue, sat, val = rng.uniform(-1, 1, size=3) * (hyp.hsv_h, hyp.hsv_s, hyp.hsv_v)
    if hue == sat == val == 0:
        return img
    # the hue turn and the gain (1 + val)(1 + sat) as one matrix: out = rgb' - V' sat / (1 + sat), where
    # rgb' and V' (its largest channel) are the turned and scaled pixels; + 0.5 so the cast rounds
    matrix = _hue_rotation(hue) * np.float32((1 + val) * (1 + sat))
    h, w = img.shape[:2]
    planes = matrix @ img.reshape(-1, 3).T.astype(np.float32)  # [3, H*W]
    value = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    value *= np.float32(sat / (1 + sat))
    value -= np.float32(0.5)
    planes -= value
    np.clip(planes, 0, 255, out=planes)
    return planes.astype(np.uint8).reshape(3, h, w).transpose(1, 2, 0)


def _hue_rotation(turns: float) -> np.ndarray:
    """3x3 rotation of RGB about the grey axis (1, 1, 1) by `turns` of the circle; positive turns move
    red towards green, as hue rises (a third of a turn maps red to green exactly)."""
    angle = 2 * math.pi * turns
    cos, k, o = math.cos(angle), math.sin(angle) / math.sqrt(3), (1 - math.cos(angle)) / 3
    return np.array(
        [[cos + o, o - k, o + k], [o + k, cos + o, o - k], [o - k, o + k, cos + o]], dtype=np.float32
    )


def flip_lr(img: np.ndarray, boxes: np.ndarray, probability: float, rng: np.random.Generator):
    """With `probability`, the image mirrored left-right and the boxes with it (x -> width - x)."""
    if rng.random() >= probability:
        return img, boxes
    width = img.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return _mirrored(img), flipped


def _mirrored(img: np.ndarray) -> np.ndarray:
    """img[:, ::-1] as an array of its own: torch's flip takes 7 us for 96 px where numpy's copy of
    3-byte pixels at a negative stride takes 60 us. Strides as the input's (an HxWx3 view of planes
    stays one)."""
    import torch

    return torch.from_numpy(img).flip(1).numpy()
