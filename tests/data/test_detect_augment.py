"""Detection geometry and augmentation pieces: letterbox and its inverse, mosaic placement, the affine
(identity exactness, box transform), box_candidates, HSV jitter and flip, Augment's bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optkit.data.detect_augment import (
    PAD_VALUE,
    Augment,
    box_candidates,
    flip_lr,
    hsv_jitter,
    labels_to_xyxy,
    letterbox,
    letterbox_boxes,
    mosaic4,
    random_affine,
    transform_boxes,
    unletterbox_xyxy,
    warp_affine,
    xyxy_to_labels,
)
from optkit.errors import DatasetError
from optkit.limits import FieldError

GREY = (60, 60, 60)


def _rect_image(w: int, h: int, box, colour=(220, 30, 30)) -> np.ndarray:
    """w x h grey image with `box` (x1, y1, x2, y2 whole pixels, x2/y2 exclusive) filled with `colour`."""
    img = np.full((h, w, 3), GREY, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = colour
    return img


def _saturated_bbox(img: np.ndarray) -> tuple:
    """(x1, y1, x2, y2) around pixels whose colour is at least half as saturated as the most saturated."""
    arr = img.astype(np.int32)
    sat = arr.max(-1) - arr.min(-1)
    ys, xs = np.nonzero(sat > sat.max() / 2)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("w, h, size", [(100, 50, 64), (30, 90, 64), (64, 64, 64), (40, 20, 96)])
def test_letterbox_geometry(w, h, size):
    box = (w // 5, h // 4, w // 2, 3 * h // 4)
    img = _rect_image(w, h, box)
    out, scale, (pad_x, pad_y) = letterbox(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert scale == pytest.approx(size / max(w, h))
    new_w, new_h = round(w * scale), round(h * scale)
    assert max(new_w, new_h) == size and pad_x == (size - new_w) // 2 and pad_y == (size - new_h) // 2
    # the pad is grey 114 on all sides and the image sits centred in between
    assert (out[:pad_y] == PAD_VALUE).all() and (out[pad_y + new_h :] == PAD_VALUE).all()
    assert (out[:, :pad_x] == PAD_VALUE).all() and (out[:, pad_x + new_w :] == PAD_VALUE).all()
    assert (out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] != PAD_VALUE).any(axis=-1).all()
    # the mapped label frames the drawn rectangle
    x1, y1, x2, y2 = box
    label = np.array([[3, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
    mapped = letterbox_boxes(label, scale, (pad_x, pad_y), (w, h), size)
    _, pixels = labels_to_xyxy(mapped, size, size)
    np.testing.assert_allclose(pixels[0], _saturated_bbox(out), atol=1.0)
    assert mapped[0, 0] == 3


def test_letterbox_takes_pil_and_array_alike():
    img = _rect_image(50, 30, (5, 5, 20, 20))
    from_array = letterbox(img, 64)
    from_pil = letterbox(Image.fromarray(img), 64)
    assert np.array_equal(from_array[0], from_pil[0]) and from_array[1:] == from_pil[1:]
    with pytest.raises(DatasetError, match="HxWx3 uint8"):
        letterbox(np.zeros((10, 10), np.uint8), 64)


def test_boxes_map_and_unmap_exactly():
    rng = np.random.default_rng(0)
    w, h, size = 173, 61, 64
    _, scale, pad = letterbox(np.zeros((h, w, 3), np.uint8), size)
    xy = rng.uniform(0, 1, (20, 2)) * 0.5
    wh = rng.uniform(0.05, 0.5, (20, 2))
    labels = np.concatenate([rng.integers(0, 5, (20, 1)), xy + wh / 2, wh], axis=1).astype(np.float32)
    mapped = letterbox_boxes(labels, scale, pad, (w, h), size)
    assert ((mapped[:, 1:3] >= 0) & (mapped[:, 1:3] <= 1)).all()
    _, in_letterbox = labels_to_xyxy(mapped, size, size)
    predictions = np.concatenate([in_letterbox, np.full((20, 1), 0.9), labels[:, :1]], axis=1)  # [n, 6]
    back = unletterbox_xyxy(predictions, scale, pad)
    _, original = labels_to_xyxy(labels, w, h)
    np.testing.assert_allclose(back[:, :4], original, atol=1e-4)  # float32 labels: 1e-4 px
    np.testing.assert_array_equal(back[:, 4:], predictions[:, 4:])  # score and class untouched
    as_torch = unletterbox_xyxy(torch.from_numpy(predictions), scale, pad)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), back, atol=1e-9)
    clipped = unletterbox_xyxy(np.array([[-10.0, -10, 100, 100]]), scale, pad, orig_wh=(w, h))
    np.testing.assert_allclose(clipped, [[0, 0, w, h]])


def test_labels_xyxy_round_trip_and_empty():
    labels = np.array([[1, 0.5, 0.25, 0.2, 0.1], [0, 0.1, 0.9, 0.2, 0.2]], np.float32)
    classes, boxes = labels_to_xyxy(labels, 64, 64)
    np.testing.assert_allclose(boxes[0], [25.6, 12.8, 38.4, 19.2], rtol=1e-6)
    np.testing.assert_allclose(xyxy_to_labels(classes, boxes, 64), labels, atol=1e-7)
    classes, boxes = labels_to_xyxy(np.zeros((0, 5), np.float32), 64, 64)
    assert (
        classes.shape == (0,) and boxes.shape == (0, 4) and xyxy_to_labels(classes, boxes, 64).shape == (0, 5)
    )


def test_mosaic_places_each_image_in_its_quadrant():
    size = 64
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    shapes = [(64, 40), (30, 64), (64, 64), (50, 20)]  # (height, width): long side 64, or smaller
    images = [np.full((h, w, 3), c, np.uint8) for (h, w), c in zip(shapes, colours, strict=True)]
    whole_image = np.array([[7, 0.5, 0.5, 1.0, 1.0]], np.float32)  # one box around each whole image
    for seed in range(5):
        canvas, classes, whole, visible = mosaic4(
            images, [whole_image] * 4, size, np.random.default_rng(seed)
        )
        xc, yc = (int(v) for v in np.random.default_rng(seed).uniform(size / 2, 3 * size / 2, size=2))
        assert canvas.shape == (2 * size, 2 * size, 3) and classes.tolist() == [7] * 4
        # each image's corner touches the centre: the pixel diagonally next to it has its colour
        for (dx, dy), colour in zip([(-1, -1), (0, -1), (-1, 0), (0, 0)], colours, strict=True):
            assert tuple(canvas[yc + dy, xc + dx]) == colour
        (h0, w0), (h1, w1), (h2, w2), (h3, w3) = shapes
        expected = [
            [xc - w0, yc - h0, xc, yc],
            [xc, yc - h1, xc + w1, yc],
            [xc - w2, yc, xc, yc + h2],
            [xc, yc, xc + w3, yc + h3],
        ]
        np.testing.assert_allclose(whole, expected)
        np.testing.assert_allclose(visible, np.clip(expected, 0, 2 * size))
        # the canvas outside the four images is grey 114
        painted = np.zeros(canvas.shape[:2], bool)
        for x1, y1, x2, y2 in np.clip(expected, 0, 2 * size).astype(int):
            painted[y1:y2, x1:x2] = True
        assert (canvas[~painted] == PAD_VALUE).all()


def test_affine_without_zoom_or_shift_is_the_identity():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    boxes = np.array([[3.0, 4.0, 30.0, 20.0]])
    hyp = Augment(translate=0, scale=0)
    out, classes, kept = random_affine(img, np.array([2.0]), boxes, boxes, 64, hyp, np.random.default_rng(0))
    assert np.array_equal(out, img)
    np.testing.assert_allclose(kept, boxes)
    assert classes.tolist() == [2.0]


def test_affine_moves_boxes_with_the_pixels():
    """A zoomed and shifted rectangle is framed by its transformed box (no rotation: exact corners)."""
    img = _rect_image(96, 96, (20, 30, 60, 50))
    box = np.array([[20.0, 30.0, 60.0, 50.0]])
    for seed in range(10):
        out, _, kept = random_affine(
            img, np.array([0.0]), box, box, 96, Augment(), np.random.default_rng(seed)
        )
        if len(kept) == 0 or kept[0, 0] <= 0 or kept[0, 1] <= 0 or kept[0, 2] >= 96 or kept[0, 3] >= 96:
            continue  # cut by the border: checked elsewhere
        np.testing.assert_allclose(kept[0], _saturated_bbox(out), atol=1.0)


@pytest.mark.parametrize(
    "matrix",
    [
        [[0.6, 0, 7.3], [0, 0.6, -4.6]],  # zoom out and shift
        [[1.4, 0, -20.2], [0, 1.4, 3.7]],  # zoom in
        [[0.5, 0, 30.0], [0, 0.5, 30.0]],
        [[0.8, -0.3, 20.0], [0.3, 0.8, -10.0]],  # rotated and zoomed
    ],
)
def test_warp_samples_where_the_matrix_says(matrix):
    """warp_affine (OpenCV, which puts pixel centres on whole coordinates) samples each output pixel's
    centre where `matrix` maps it from, in this module's convention (pixel i's centre at i + 0.5): on a
    linear ramp, which bilinear sampling reproduces exactly, every output pixel is the ramp's value
    there within rounding (a half-pixel slip would cost up to 1.5 levels), and grey 114 away from it."""
    ys, xs = np.mgrid[0:80, 0:96]
    gradients = np.array([[2, 0], [0, 3], [1, 2]])  # levels per pixel along (x, y), per channel
    img = np.stack([xs, ys], -1) @ gradients.T
    matrix = np.array([*matrix, [0, 0, 1]])
    warped = warp_affine(img.astype(np.uint8), matrix, 64).astype(float)
    out_x, out_y = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    source = np.stack([out_x, out_y, np.ones((64, 64))], -1) @ np.linalg.inv(matrix)[:2].T  # centres' x, y
    expected = (source - 0.5) @ gradients.T  # the ramp between the centres of the pixels around
    sx, sy = source[..., 0], source[..., 1]
    inside = (sx > 0.5) & (sx < 95.5) & (sy > 0.5) & (sy < 79.5)  # between 4 input pixels' centres
    outside = (sx < -1) | (sx > 97) | (sy < -1) | (sy > 81)  # more than a pixel off the image
    assert inside.sum() > 500 and outside.sum() > 100
    assert np.abs(warped[inside] - expected[inside]).max() <= 0.6
    assert (warped[outside] == PAD_VALUE).all()


def test_transform_boxes_of_a_rotation_frames_the_corners():
    quarter_turn = np.array([[0.0, -1, 10], [1, 0, 0], [0, 0, 1]])  # (x, y) -> (10 - y, x)
    np.testing.assert_allclose(transform_boxes(np.array([[1.0, 2, 3, 6]]), quarter_turn), [[4, 1, 8, 3]])


def test_box_candidates_drop_slivers():
    before = np.array([[0, 0, 40, 40]] * 5, dtype=np.float64)
    after = np.array(
        [
            [0, 0, 40, 40],  # whole: kept
            [0, 0, 1.5, 40],  # 1.5 px wide: dropped
            [0, 0, 40, 1.9],  # 1.9 px high: dropped
            [0, 0, 12, 12],  # 144 / 1600 = 9% of its area: dropped
            [0, 0, 14, 14],  # 196 / 1600 = 12%: kept
        ],
        dtype=np.float64,
    )
    assert box_candidates(before, after).tolist() == [True, False, False, False, True]
    thin_before = np.array([[0, 0, 500, 4.0]])
    assert not box_candidates(thin_before, thin_before)[0]  # 125:1 aspect: dropped
    assert box_candidates(np.array([[0, 0, 300, 4.0]]), np.array([[0, 0, 300, 4.0]]))[0]  # 75:1 kept


def test_hsv_jitter_keeps_grey_grey_and_moves_hue():
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :4] = (90, 90, 90)
    img[:, 4:] = (200, 40, 40)
    assert hsv_jitter(img, Augment(hsv_h=0, hsv_s=0, hsv_v=0), np.random.default_rng(0)) is img
    changed = 0
    for seed in range(8):
        out = hsv_jitter(img, Augment(hsv_h=0.1, hsv_s=0.5, hsv_v=0.3), np.random.default_rng(seed))
        grey = out[:, :4].astype(int)
        assert (grey.max(-1) == grey.min(-1)).all()  # no saturation to scale: grey stays grey
        changed += not np.array_equal(out[:, 4:], img[:, 4:])
    assert changed == 8


def test_hsv_hue_wraps_around():
    """Red sits at hue 0: a negative shift wraps it to the top of the circle (magenta-ish), not to 0."""
    red = np.full((2, 2, 3), (220, 20, 20), np.uint8)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        shift = np.random.default_rng(seed).uniform(-1, 1, size=3)[0] * 0.2
        out = hsv_jitter(red, Augment(hsv_h=0.2, hsv_s=0, hsv_v=0), rng)[0, 0].astype(int)
        if shift < -0.05:  # hue moved back past red: blue rises above green
            assert out[2] > out[1] + 20
        if shift > 0.05:  # forward: towards orange, green rises
            assert out[1] > out[2] + 20


def test_flip_mirrors_image_and_boxes():
    img = _rect_image(64, 32, (4, 5, 20, 25))
    boxes = np.array([[4.0, 5, 20, 25]])
    flipped, moved = flip_lr(img, boxes, 1.0, np.random.default_rng(0))
    np.testing.assert_allclose(moved, [[44, 5, 60, 25]])
    np.testing.assert_allclose(moved[0], _saturated_bbox(flipped))
    same, kept = flip_lr(img, boxes, 0.0, np.random.default_rng(0))
    assert same is img and kept is boxes


def test_augment_defaults_and_bounds():
    hyp = Augment()
    assert (hyp.hsv_h, hyp.hsv_s, hyp.hsv_v) == (0.015, 0.7, 0.4)
    assert (hyp.translate, hyp.scale, hyp.fliplr, hyp.mosaic, hyp.degrees, hyp.shear) == (
        0.1,
        0.5,
        0.5,
        1,
        0,
        0,
    )
    for field, bad in [("scale", 1.0), ("fliplr", 1.5), ("mosaic", -0.1), ("translate", float("nan"))]:
        with pytest.raises(FieldError, match=f"^{field} must be"):
            Augment(**{field: bad})


def test_hsv_gains_keep_hue_and_value_where_they_should():
    """A third of the circle maps red to green; a saturation gain keeps each pixel's value (its largest
    channel) and moves the other channels away from it; a value gain scales all three."""
    from optkit.data.detect_augment import _hue_rotation

    red = np.array([[255.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(red @ _hue_rotation(1 / 3).T, [[0, 255, 0]], atol=1e-3)
    pixel = np.full((1, 1, 3), (200, 120, 80), np.uint8)

    class Fixed:  # a generator whose uniform draws are fixed: (hue, sat, val) multipliers
        def __init__(self, draws):
            self.draws = np.array(draws, np.float64)

        def uniform(self, low, high, size):
            return self.draws

    saturated = hsv_jitter(pixel, Augment(hsv_h=0, hsv_s=0.5, hsv_v=0), Fixed([0, 1, 0]))[0, 0]
    assert saturated.tolist() == [200, 80, 20]  # 200 - 1.5 * (200 - c)
    brighter = hsv_jitter(pixel, Augment(hsv_h=0, hsv_s=0, hsv_v=0.2), Fixed([0, 0, 1]))[0, 0]
    assert brighter.tolist() == [240, 144, 96]
