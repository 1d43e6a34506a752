"""DetectDataset and collate_detect: validation items are letterboxes with nothing random; training items
are pure functions of (index, seed, epoch); mosaic only while epoch < mosaic_epochs; augmented boxes frame
the pixels of their objects; slivers are dropped; background images; batches through the loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import optkit.data.detect_dataset as detect_dataset
from optkit.data.detect_augment import PAD_VALUE, Augment, letterbox, letterbox_boxes
from optkit.data.detect_dataset import DetectDataset, collate_detect
from optkit.data.loader import build_train_loader, build_val_loader
from optkit.errors import DatasetError

S = 96  # network input side in these tests
BACKGROUND = (60, 60, 60)
COLOURS = [  # one saturated colour per class, hues far apart
    (220, 30, 30),
    (30, 200, 30),
    (30, 30, 220),
    (220, 220, 30),
    (30, 210, 210),
    (210, 30, 210),
    (240, 130, 20),
    (130, 30, 230),
]
SIZES = [(128, 128), (160, 96), (96, 140), (120, 120), (200, 100), (90, 90), (110, 150), (140, 80)]  # (w, h)
NO_COLOUR_JITTER = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
STILL = Augment(translate=0, scale=0, fliplr=0, **NO_COLOUR_JITTER)  # the affine is the identity


def _rect_images(folder, count=8) -> tuple[list[str], list[np.ndarray]]:
    """`count` images of different sizes, each one rectangle of colour i (class i) on flat grey, at least
    20% of the image from every edge, with its exact label."""
    paths, labels = [], []
    for i in range(count):
        w, h = SIZES[i % len(SIZES)]
        img = np.full((h, w, 3), BACKGROUND, np.uint8)
        x1, y1 = round(w * (0.2 + 0.03 * i)), round(h * (0.25 - 0.005 * i))
        x2, y2 = x1 + round(w * (0.25 + 0.03 * (i % 4))), y1 + round(h * (0.3 + 0.04 * (i % 5)))
        img[y1:y2, x1:x2] = COLOURS[i % len(COLOURS)]
        path = folder / f"img{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
        labels.append(
            np.array([[i, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
        )
    return paths, labels


def _flat_images(folder, count=8) -> tuple[list[str], list[np.ndarray]]:
    """Square images of one colour each, no objects (background images)."""
    paths = []
    for i in range(count):
        path = folder / f"flat{i}.png"
        Image.fromarray(np.full((S, S, 3), COLOURS[i], np.uint8)).save(path)
        paths.append(str(path))
    return paths, [np.zeros((0, 5), np.float32) for _ in range(count)]


@pytest.fixture
def rects(tmp_path):
    return _rect_images(tmp_path)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def _pixel_boxes(labels: torch.Tensor) -> np.ndarray:
    cx, cy, w, h = (labels[:, 1:] * S).double().numpy().T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---- validation items ---------------------------------------------------------------------------------


def test_val_item_is_the_letterbox_and_draws_nothing_random(rects, monkeypatch):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S)

    def no_randomness(*args, **kwargs):
        raise AssertionError("a validation item drew random numbers")

    monkeypatch.setattr(detect_dataset.np.random, "default_rng", no_randomness)
    for i in range(len(paths)):
        image, target = dataset[i]
        again_image, again_target = dataset[i]
        assert image.dtype == torch.uint8 and image.shape == (3, S, S) and target.dtype == torch.float32
        assert torch.equal(image, again_image) and torch.equal(target, again_target)
        # the long side was resized to S on reading, so the letterbox only pads
        w0, h0 = Image.open(paths[i]).size
        h, w = dataset.load(i).shape[:2]
        assert (w, h) == (round(w0 * S / max(w0, h0)), round(h0 * S / max(w0, h0)))
        expected, scale, pad = letterbox(dataset.load(i), S)
        assert scale == 1.0 and np.array_equal(_hwc(image), expected)
        np.testing.assert_allclose(target.numpy(), letterbox_boxes(labels[i], 1.0, pad, (w, h), S))
        # the box frames the coloured rectangle
        assert _iou(_pixel_boxes(target)[0], _colour_bbox(_hwc(image), window=None)) > 0.9


def test_augment_off_gives_val_items_for_training_keys(rects):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S, augment=False, mosaic_epochs=5)
    for i in range(3):
        for got, want in zip(dataset[(i, 7, 1)], dataset[i], strict=True):
            assert torch.equal(got, want)


def test_identity_augmentation_reproduces_the_letterbox_exactly(rects):
    """Without zoom, shift, flip or colour jitter (and no mosaic) a training item is the val item,
    pixel for pixel: the affine samples the pixels exactly where they are."""
    paths, labels = rects
    train = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=0, hyp=STILL)
    val = DetectDataset(paths, labels, S)
    for i in range(len(paths)):
        image, target = train[(i, 0, 0)]
        assert torch.equal(image, val[i][0])
        np.testing.assert_allclose(target.numpy(), val[i][1].numpy(), atol=1e-6)


# ---- training items are pure functions of their key -----------------------------------------------------


def test_train_item_is_a_function_of_its_key(rects):
    paths, labels = rects
    first = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=3)
    second = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=3, cache=True)
    for key in [(0, 1, 0), (5, 1, 2), (3, 9, 4)]:
        a, b = first[key], second[key]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[0], first[key][0])  # asking again: the same item
    base = first[(2, 1, 0)][0]
    assert not torch.equal(base, first[(2, 1, 1)][0])  # another epoch
    assert not torch.equal(base, first[(2, 2, 0)][0])  # another seed
    assert not torch.equal(base, first[(3, 1, 0)][0])  # another image


def test_mosaic_only_while_epoch_is_below_mosaic_epochs(tmp_path):
    """Flat images of one colour each, no zoom or shift: a mosaic shows the item's own colour in the top
    left (the canvas' middle square starts in quadrant 0) and other images' colours elsewhere; without
    mosaic the item is its own colour only."""
    paths, labels = _flat_images(tmp_path)
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=3, hyp=STILL)
    mixed = 0
    for epoch in range(6):
        for index in range(4):
            image = _hwc(dataset[(index, 11, epoch)][0])
            colours = {tuple(c) for c in image.reshape(-1, 3)}
            assert tuple(image[0, 0]) == COLOURS[index]
            if epoch >= 3:
                assert colours == {COLOURS[index]}
            else:
                assert colours <= set(COLOURS) | {(PAD_VALUE,) * 3}
                mixed += len(colours) > 1
    assert mixed >= 10  # of 12: the 3 other images are random picks, each the item itself 1 time in 8
    never = DetectDataset(
        paths, labels, S, augment=True, mosaic_epochs=3, hyp=Augment(mosaic=0.0, **_still())
    )
    assert all(
        {tuple(c) for c in _hwc(never[(i, 11, 0)][0]).reshape(-1, 3)} == {COLOURS[i]} for i in range(4)
    )


def _still() -> dict:
    return {"translate": 0.0, "scale": 0.0, "fliplr": 0.0, **NO_COLOUR_JITTER}


# ---- augmented boxes frame their objects -----------------------------------------------------------------


def _colour_bbox(img: np.ndarray, window) -> tuple:
    """(x1, y1, x2, y2) around the saturated pixels in `window` (x1, y1, x2, y2; None: the whole image),
    counting a pixel when its saturation is at least half the window's highest: the 50% coverage edge."""
    x1, y1, x2, y2 = window if window is not None else (0, 0, img.shape[1], img.shape[0])
    arr = img[y1:y2, x1:x2].astype(np.int32)
    sat = arr.max(-1) - arr.min(-1)
    assert sat.max() > 15, "no coloured pixels under a box"
    ys, xs = np.nonzero(sat >= sat.max() / 2)
    return x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1


def _check_boxes_frame_objects(image: np.ndarray, target: torch.Tensor) -> int:
    """Every box inside [0, 1]; every box not cut by the output's border has IoU > 0.8 with the pixels of
    its colour around it (3 px margin: objects are further apart than that). Returns the boxes checked."""
    assert ((target[:, 1:3] - target[:, 3:] / 2) >= -1e-6).all() and (
        (target[:, 1:3] + target[:, 3:] / 2) <= 1 + 1e-6
    ).all()
    checked = 0
    for box in _pixel_boxes(target):
        if box[0] < 1 or box[1] < 1 or box[2] > S - 1 or box[3] > S - 1:
            continue  # cut by the border: part of the object lies outside
        x1, y1 = max(0, int(box[0]) - 3), max(0, int(box[1]) - 3)
        x2, y2 = min(S, int(np.ceil(box[2])) + 3), min(S, int(np.ceil(box[3])) + 3)
        found = _colour_bbox(image, (x1, y1, x2, y2))
        assert _iou(box, found) > 0.8, (box, found)
        checked += 1
    return checked


def _unlabelled_colours_are_cut(image: np.ndarray, target: torch.Tensor) -> None:
    """(No colour jitter.) A colour visible with no label of its class belongs to objects the border or
    the mosaic's edge cut (dropped as slivers): its pixels touch the output's edge or the grey fill."""
    labelled = {int(c) for c in target[:, 0].tolist()}
    fill = (image == PAD_VALUE).all(-1)
    near_fill = fill.copy()
    for dy, dx in [(-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, 1), (-1, 1), (1, -1)]:
        near_fill |= np.roll(fill, (dy, dx), axis=(0, 1))
    near_fill[:2], near_fill[-2:], near_fill[:, :2], near_fill[:, -2:] = True, True, True, True
    for cls, colour in enumerate(COLOURS):
        mask = np.abs(image.astype(int) - colour).max(-1) <= 10
        if cls not in labelled and mask.any():
            assert (mask & near_fill).any(), f"class {cls} is visible, not cut, and has no label"


@pytest.mark.parametrize(
    "hyp",
    [
        Augment(**NO_COLOUR_JITTER),
        Augment(),
        Augment(fliplr=1.0, scale=0.3, translate=0.2, **NO_COLOUR_JITTER),
    ],
    ids=["no-colour", "defaults", "flip-always"],
)
def test_augmented_boxes_frame_their_objects(rects, hyp):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=2, hyp=hyp)
    checked = mosaics_with_boxes = 0
    for epoch in (0, 1, 2):  # 0 and 1: mosaic; 2: letterbox + affine
        for index in range(len(paths)):
            image, target = dataset[(index, 5, epoch)]
            image = _hwc(image)
            assert target.shape[1] == 5 and set(target[:, 0].tolist()) <= set(range(len(paths)))
            checked += _check_boxes_frame_objects(image, target)
            mosaics_with_boxes += epoch < 2 and len(target) > 1
            if hyp.hsv_s == 0:
                _unlabelled_colours_are_cut(image, target)
    assert checked >= 20 and mosaics_with_boxes >= 4


def test_rotation_and_shear_keep_boxes_around_objects(rects):
    paths, labels = rects
    hyp = Augment(degrees=10, shear=5, **NO_COLOUR_JITTER)
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=1, hyp=hyp)
    checked = 0
    for key in [(i, 3, epoch) for i in range(len(paths)) for epoch in (0, 1)]:  # mosaic, then not
        image, target = dataset[key]
        checked += _check_boxes_frame_objects(_hwc(image), target)
    assert checked >= 8


def test_slivers_are_dropped(tmp_path):
    """A 1 px wide label disappears; an object pushed over the edge until only a sliver shows is
    dropped, one cut less far is kept with its visible width."""
    path = tmp_path / "thin.png"
    img = np.full((S, S, 3), BACKGROUND, np.uint8)
    img[20:60, 40:41] = COLOURS[0]  # 1 px wide
    img[20:60, 60:80] = COLOURS[1]
    Image.fromarray(img).save(path)
    label = np.array([[0, 40.5 / S, 40 / S, 1 / S, 40 / S], [1, 70 / S, 40 / S, 20 / S, 40 / S]], np.float32)
    dataset = DetectDataset([str(path)], [label], S, augment=True, hyp=STILL)
    _, target = dataset[(0, 0, 0)]
    assert target[:, 0].tolist() == [1.0]
    np.testing.assert_allclose(target.numpy(), label[1:], atol=1e-6)
    # shifted sideways by up to half the image: kept while more than 2 px (10%) of its 20 px width shows
    edge = Augment(translate=0.5, scale=0, fliplr=0, **NO_COLOUR_JITTER)
    shifted = DetectDataset([str(path)], [label], S, augment=True, hyp=edge)
    dropped = cut_but_kept = 0
    for seed in range(40):
        image, target = shifted[(0, seed, 0)]
        near = np.abs(_hwc(image).astype(int) - COLOURS[1]).max(-1) <= 60
        visible = int(near.any(axis=0).sum())  # its columns in the output, +- 1
        assert 0 not in target[:, 0].tolist()
        if visible <= 1:
            assert len(target) == 0
            dropped += 1
        elif visible >= 4:
            assert target[:, 0].tolist() == [1.0]
            np.testing.assert_allclose(target[0, 3].item() * S, visible, atol=1.0)
            cut_but_kept += visible < 19
    assert dropped >= 1 and cut_but_kept >= 1


def test_background_images(tmp_path):
    paths, labels = _flat_images(tmp_path, count=4)
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=1)
    for key in [0, (1, 0, 0), (2, 0, 1)]:
        image, target = dataset[key]
        assert image.shape == (3, S, S) and target.shape == (0, 5) and target.dtype == torch.float32
    images, targets = collate_detect([dataset[0], dataset[(1, 0, 0)]])
    assert images.shape == (2, 3, S, S) and targets.shape == (0, 6)


# ---- batches ---------------------------------------------------------------------------------------------


def test_collate_detect_shapes_and_batch_indices(rects, tmp_path):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S)
    background = DetectDataset(*_flat_images(tmp_path, count=1), S)[0]
    batch = [dataset[0], background, dataset[3]]
    images, targets = collate_detect(batch)
    assert images.dtype == torch.float32 and images.shape == (3, 3, S, S)
    assert torch.allclose(images[1], batch[1][0].float() / 255)
    assert 0 <= images.min() and images.max() <= 1
    assert targets.dtype == torch.float32 and targets.shape == (2, 6)
    assert targets[:, 0].tolist() == [0.0, 2.0]  # the background image (batch index 1) has no rows
    assert torch.equal(targets[0, 1:], batch[0][1][0]) and torch.equal(targets[1, 1:], batch[2][1][0])


def test_channels_last_collate_gives_the_same_values_in_the_trainers_layout(rects):
    """The train loader's collate: the same floats as the plain one, already in the channels-last layout
    the trainer computes in on the CPU (so its conversion copies nothing)."""
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=1)
    batch = [dataset[(i, 0, 0)] for i in range(3)]
    plain, targets = collate_detect(batch)
    fast, fast_targets = collate_detect(batch, channels_last=True)
    assert torch.equal(fast, plain) and torch.equal(fast_targets, targets)
    assert fast.dtype == torch.float32 and fast.is_contiguous(memory_format=torch.channels_last)
    assert fast.to(memory_format=torch.channels_last).data_ptr() == fast.data_ptr()  # no copy
    assert torch.equal(plain, torch.stack([image for image, _ in batch]).float().div_(255.0))


def test_train_loader_batches_do_not_depend_on_workers(rects):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S, augment=True, mosaic_epochs=1, cache=True)
    epochs = {}
    for workers in (0, 2):
        loader, sampler = build_train_loader(dataset, 4, workers, seed=3, collate_fn=collate_detect)
        epochs[workers] = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs[workers].append(list(loader))
    for batches0, batches2 in zip(epochs[0], epochs[2], strict=True):
        assert len(batches0) == 2
        for (images0, targets0), (images2, targets2) in zip(batches0, batches2, strict=True):
            assert images0.shape == (4, 3, S, S) and images0.dtype == torch.float32
            assert targets0.shape[1] == 6 and set(targets0[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
            assert torch.equal(images0, images2) and torch.equal(targets0, targets2)
    assert not torch.equal(epochs[0][0][0][0], epochs[0][1][0][0])  # epoch 1 differs (order, augmentation)


def test_val_loader_batches(rects):
    paths, labels = rects
    dataset = DetectDataset(paths, labels, S)
    batches = list(build_val_loader(dataset, 3, 0, collate_fn=collate_detect))
    assert [len(images) for images, _ in batches] == [3, 3, 2]
    images, targets = batches[1]
    assert targets[:, 0].tolist() == [0.0, 1.0, 2.0] and targets[:, 1].tolist() == [3.0, 4.0, 5.0]
    assert torch.allclose(images[0], dataset[3][0].float() / 255)


# ---- refusals --------------------------------------------------------------------------------------------


def test_refusals(rects, tmp_path):
    paths, labels = rects
    with pytest.raises(DatasetError, match="8 images but 7 label arrays"):
        DetectDataset(paths, labels[:7], S, root=tmp_path)
    with pytest.raises(DatasetError, match="img2.png: labels must be rows"):
        DetectDataset(paths, labels[:2] + [np.zeros((1, 4), np.float32)] + labels[3:], S)
    with pytest.raises(DatasetError, match="has no images"):
        DetectDataset([], [], S, root=tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read image"):
        DetectDataset([str(broken)], [np.zeros((0, 5))], S)[0]
