"""Boxes on images (optkit/pictures/boxes.py): outlines in the class colour on the box border and nothing
elsewhere, label tags inside the image, the grid's geometry and tiles, the loaders' and NMS layouts turned
into boxes per image, and JPEG files written whole or not at all."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image

from optkit.io import WriteError
from optkit.pictures import boxes as pics

NAMES = ["cat", "dog", "bird"]


def _black(w=200, h=100):
    return Image.new("RGB", (w, h), (0, 0, 0))


def _pixels(image):
    return np.asarray(image).astype(np.int64)


def test_palette_colours_are_distinct_and_apart_from_the_padding():
    colours = [pics.class_color(c) for c in range(len(pics.PALETTE))]
    assert len(set(colours)) == len(pics.PALETTE) == 20
    assert pics.class_color(20) == pics.class_color(0)  # the palette repeats
    grey = np.array(pics.LETTERBOX_GREY)
    assert min(np.abs(np.array(c) - grey).sum() for c in colours) > 60
    assert pics.text_color((255, 255, 0)) == (0, 0, 0) and pics.text_color((0, 0, 128)) == (255, 255, 255)


def test_class_names_from_a_list_a_dict_or_nothing():
    assert pics.class_name(NAMES, 1) == "dog"
    assert pics.class_name({7: "car"}, 7) == "car"
    assert pics.class_name(NAMES, 9) == "9" and pics.class_name(None, 2) == "2"


def test_outline_in_class_colour_on_the_border_only():
    image = _black()
    out = pics.draw_detections(image, np.array([[20.0, 40.0, 120.0, 90.0]]), [2], NAMES, line_width=2)
    px = _pixels(out)
    colour = pics.class_color(2)
    assert tuple(px[65, 20]) == colour and tuple(px[65, 21]) == colour  # left edge, 2 px wide
    assert tuple(px[65, 120]) == colour and tuple(px[90, 70]) == colour  # right and bottom edges
    assert tuple(px[65, 22]) == (0, 0, 0)  # inside the outline: not filled
    assert tuple(px[65, 70]) == (0, 0, 0) and tuple(px[10, 180]) == (0, 0, 0)  # centre, far away
    assert (px[:, 125:] == 0).all() and (px[93:] == 0).all()  # nothing right of or below the box
    assert _pixels(image).max() == 0  # the input is unchanged: a copy was drawn on
    tag = px[:40, 20:60]  # above the box: the filled tag
    assert (tag == colour).all(axis=-1).sum() > 100


def test_scores_widen_the_tag():
    box, cls = np.array([[20.0, 40.0, 120.0, 90.0]]), np.array([0])
    colour = pics.class_color(0)

    def tag_pixels(out):
        return (_pixels(out)[:40] == colour).all(axis=-1).sum()

    plain = pics.draw_detections(_black(), box, cls, NAMES)
    scored = pics.draw_detections(_black(), box, cls, NAMES, scores=np.array([0.87]))
    assert tag_pixels(scored) > tag_pixels(plain) > 0


def test_tags_stay_inside_the_image():
    w, h = 200, 100
    edges = ([150, 0, 199, 40], [0, 0, 30, 30], [180, 90, 199, 99], [-50, -50, 500, 500], [195, 5, 199, 8])
    for box in edges:
        x0, y0, x1, y1 = pics.label_rect(box, (60, 14), (w, h))
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h, box
        assert (x1 - x0 + 1, y1 - y0 + 1) == (60, 14)
    assert pics.label_rect([10, 50, 40, 80], (60, 14), (w, h)) == (10, 36, 69, 49)  # above the box
    assert pics.label_rect([10, 5, 40, 80], (60, 14), (w, h))[1] == 5  # no room above: inside its top
    assert pics.label_rect([0, 0, 10, 10], (300, 120), (w, h)) == (0, 0, w - 1, h - 1)  # larger than image


def test_a_box_at_the_top_right_corner_has_its_tag_inside_the_box():
    out = pics.draw_detections(_black(), np.array([[120.0, 0.0, 199.0, 60.0]]), [1], NAMES, scores=[0.5])
    px = _pixels(out)
    colour = pics.class_color(1)
    is_colour = (px == colour).all(axis=-1)
    assert is_colour[1:12, 121:199].sum() > 150  # the tag's fill, inside the box's top
    assert not is_colour[30:50, 122:198].any()  # below the tag, inside the outline: untouched
    assert not is_colour[:, :119].any()  # nothing left of the box: the tag starts at its corner


def test_boxes_outside_reversed_or_nan_do_not_fail():
    odd = np.array([[300, 300, 400, 400], [-40, -40, -1, -1], [150, 80, 50, 20], [np.nan, 0, 10, 10]])
    out = pics.draw_detections(_black(), odd, [0, 1, 2, 0], NAMES)
    px = _pixels(out)
    assert (px == pics.class_color(2)).all(axis=-1).any()  # the reversed box is drawn
    assert not (px == pics.class_color(1)).all(axis=-1).any()  # the one wholly outside is not
    with pytest.raises(ValueError, match="2 boxes but 1 classes"):
        pics.draw_detections(_black(), odd[:2], [0], NAMES)


def test_tensors_and_an_image_of_another_mode_are_read():
    image = Image.new("L", (64, 64), 0)
    out = pics.draw_detections(image, torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([1.0]), NAMES)
    assert out.mode == "RGB" and tuple(_pixels(out)[24, 8]) == pics.class_color(1)
    empty = pics.draw_detections(image, np.zeros((0, 4)), np.zeros(0), NAMES)
    assert _pixels(empty).max() == 0


def test_font_size_follows_the_request_where_pillow_can():
    import inspect

    from PIL import ImageFont

    if "size" not in inspect.signature(ImageFont.load_default).parameters:
        pytest.skip("this Pillow has only the fixed-size bitmap font")
    small, big = pics.label_font(11), pics.label_font(30)
    assert big.getbbox("Ag")[3] > 2 * small.getbbox("Ag")[3] * 0.9


def test_line_width_and_text_follow_the_image_size():
    assert pics.default_line_width(64, 64) == 1
    assert pics.default_line_width(640, 640) == 3
    assert pics.default_line_width(1920, 1080) > pics.default_line_width(640, 640)
    assert pics.default_font_size(64, 64) == pics.MIN_FONT_PX
    assert pics.default_font_size(1280, 1280) > pics.default_font_size(640, 640)


def _grey_batch(b: int, s: int) -> torch.Tensor:
    """Image i is uniformly (i + 1) * 20 / 255 grey, so each tile can be told apart."""
    return torch.stack([torch.full((3, s, s), (i + 1) * 20 / 255) for i in range(b)])


def test_grid_geometry_and_tiles():
    batch = _grey_batch(5, 64)
    per_image = [(np.zeros((0, 4)), np.zeros(0), None)] * 5
    grid = pics.batch_grid(batch, per_image, NAMES)
    gap = pics.GRID_GAP
    assert pics.grid_shape(5) == (3, 2)
    assert grid.size == (3 * 64 + 2 * gap, 2 * 64 + gap)
    px = _pixels(grid)
    for i in range(5):
        r, c = divmod(i, 3)
        tile = px[r * (64 + gap) : r * (64 + gap) + 64, c * (64 + gap) : c * (64 + gap) + 64]
        assert (tile == (i + 1) * 20).all(), i
    assert (px[:, 64 : 64 + gap] == 255).all()  # the separator
    assert (px[64 + gap :, 2 * (64 + gap) :] == 255).all()  # the sixth cell is empty
    assert pics.batch_grid(batch, per_image, NAMES, max_images=4).size == (2 * 64 + gap, 2 * 64 + gap)
    for n, shape in ((1, (1, 1)), (4, (2, 2)), (8, (3, 3)), (16, (4, 4)), (10, (4, 3))):
        assert pics.grid_shape(n) == shape


def test_grid_of_large_photos_is_at_most_1920_wide_and_keeps_their_aspect():
    photos = [Image.new("RGB", (1000, 600), (200, 10, 10)) for _ in range(5)]
    per_image = [(np.array([[0.0, 0.0, 999.0, 599.0]]), np.array([0]), None)] * 5
    grid = pics.batch_grid(photos, per_image, NAMES)
    tile = pics.tile_side(1000, 3)
    assert tile == (1920 - 2 * pics.GRID_GAP) // 3 and max(grid.size) <= 1920
    px = _pixels(grid)
    height = round(600 * tile / 1000)  # the photo's height in the tile; grey padding below
    assert tuple(px[tile // 2 - 60, tile // 2]) == (200, 10, 10)
    assert tuple(px[height + 5, tile // 2]) == pics.LETTERBOX_GREY
    assert tuple(px[height // 2, 0]) == pics.class_color(0)  # the box, scaled to the tile


def test_grid_draws_the_loaders_targets_and_captions():
    s = 64
    batch = _grey_batch(2, s)
    targets = torch.tensor([[1, 2, 0.5, 0.5, 0.5, 0.5]])  # image 1: a class-2 box, the middle half
    per_image = pics.targets_by_image(targets, batch=2, size=s)
    grid = pics.batch_grid(batch, per_image, NAMES, captions=["a.png", "b.png"])
    px = _pixels(grid)
    x0 = s + pics.GRID_GAP  # tile 1 starts here
    assert tuple(px[s // 2, x0 + s // 4]) == pics.class_color(2)  # the box's left edge, at x = 16
    assert not (px[:, :s] == pics.class_color(2)).all(axis=-1).any()  # tile 0 has no box
    assert tuple(px[s - 2, 1]) == (0, 0, 0)  # the caption strip at the bottom-left
    with pytest.raises(ValueError, match="2 images but boxes for 1"):
        pics.batch_grid(batch, per_image[:1], NAMES)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        pics.batch_grid(torch.zeros(2, 64, 64), per_image, NAMES)


def test_targets_by_image_converts_normalised_centres_to_pixel_corners():
    targets = np.array([[0, 1, 0.5, 0.5, 0.2, 0.4], [2, 0, 0.1, 0.2, 0.2, 0.2], [0, 2, 0.25, 0.75, 0.5, 0.5]])
    out = pics.targets_by_image(torch.tensor(targets, dtype=torch.float32), batch=3, size=100)
    assert len(out) == 3
    np.testing.assert_allclose(out[0][0], [[40, 30, 60, 70], [0, 50, 50, 100]], atol=1e-4)
    assert list(out[0][1]) == [1, 2] and out[0][2] is None
    assert out[1][0].shape == (0, 4) and len(out[1][1]) == 0
    np.testing.assert_allclose(out[2][0], [[0, 10, 20, 30]], atol=1e-4)


def test_predictions_by_image_keeps_confident_boxes():
    preds = [torch.tensor([[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.1, 1]]), torch.zeros(0, 6)]
    out = pics.predictions_by_image(preds)
    np.testing.assert_allclose(out[0][0], [[1, 2, 3, 4]])
    assert list(out[0][1]) == [2] and np.allclose(out[0][2], [0.9])
    assert out[1][0].shape == (0, 4)


def test_save_jpg_writes_a_whole_jpeg_and_makes_its_folder(tmp_path):
    image = pics.draw_detections(_black(), np.array([[20.0, 40.0, 120.0, 90.0]]), [0], NAMES)
    target = tmp_path / "run" / "val_batch0_pred.jpg"
    pics.save_jpg(image, target)
    with Image.open(target) as im:
        assert im.format == "JPEG" and im.size == (200, 100)
        im.load()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


def test_save_jpg_refuses_a_file_in_the_way_and_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(WriteError, match=r"cannot write .*x\.jpg: .*blocker is a file, not a folder"):
        pics.save_jpg(_black(), tmp_path / "blocker" / "x.jpg")

    target = tmp_path / "pred.jpg"
    target.write_bytes(b"previous")

    def half_then_full_disk(self, f, *args, **kwargs):
        f.write(b"\xff\xd8 half a jpeg")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_full_disk)
    with pytest.raises(WriteError, match="no space left .*previous pred.jpg is unchanged"):
        pics.save_jpg(_black(), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "pred.jpg"]
