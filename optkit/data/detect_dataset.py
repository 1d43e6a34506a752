"""DetectDataset: images and their YOLO labels as square network inputs, and collate_detect, which batches
them (the batch layout all detection parts share: images [B, 3, S, S] in [0, 1], targets [M, 6]).

Keys, as for ImageFolder (optkit.data.folder): an int for validation (letterbox only, nothing random), or
an (index, seed, epoch) key from EpochSampler for training, whose augmentation (mosaic while
epoch < mosaic_epochs, affine, HSV, flip; optkit.data.detect_augment) draws only from
numpy.random.default_rng((seed, epoch, index)): an item is a pure function of its key, so the worker count
does not change it and a resumed run repeats it exactly.
"""

from __future__ import annotations

import numpy as np

from optkit.data.detect_augment import (
    Augment,
    flip_lr,
    hsv_jitter,
    labels_to_xyxy,
    letterbox,
    letterbox_boxes,
    mosaic4,
    random_affine,
    resize_long_side,
    unletterbox_xyxy,
    xyxy_to_labels,
)
from optkit.errors import DatasetError
from optkit.limits import IMGSZ

__all__ = ["Augment", "DetectDataset", "collate_detect", "letterbox", "letterbox_boxes", "unletterbox_xyxy"]


class DetectDataset:
    """A map-style dataset of (image uint8 tensor [3, S, S], labels float32 tensor [n, 5]) items, labels
    (class, cx, cy, w, h) normalised to the S x S output (S = imgsz).

    `labels[i]` holds image i's rows normalised to that image ([0, 5] for a background image). Each image
    is read with read_rgb and resized so its long side is imgsz (as YOLO loads them); `cache=True` decodes
    and resizes every image up front, in the parent process, so forked loader workers share the pages.
    """

    def __init__(
        self,
        images: list[str],
        labels: list[np.ndarray],
        imgsz: int,
        augment: bool = False,
        mosaic_epochs: int = 0,
        hyp: Augment = Augment(),  # frozen: one shared default is safe
        cache: bool = False,
        root=None,
    ):
        IMGSZ.check("imgsz", imgsz)
        self.root = root
        if not images:
            raise DatasetError(f"{root or 'the split'} has no images")
        if len(images) != len(labels):
            raise DatasetError(
                f"{root or 'the split'}: {len(images)} images but {len(labels)} label arrays (one per image)"
            )
        self.images = [str(p) for p in images]
        self.labels = [_checked_labels(rows, path) for rows, path in zip(labels, self.images, strict=True)]
        self.imgsz, self.augment, self.mosaic_epochs, self.hyp = imgsz, augment, mosaic_epochs, hyp
        self._cache = [self._read(i) for i in range(len(self.images))] if cache else None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        """Image `index` as an HxWx3 uint8 array with its long side imgsz."""
        return self._cache[index] if self._cache is not None else self._read(index)

    def _read(self, index: int) -> np.ndarray:
        from optkit.data.folder import read_rgb

        return resize_long_side(read_rgb(self.images[index]), self.imgsz)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed, epoch = key
            if self.augment:
                return self._augmented(index, epoch, np.random.default_rng((seed, epoch, index)))
            key = index
        img, labels = self._letterboxed(key)
        return _as_tensors(img, labels)

    def _letterboxed(self, index: int):
        """(S x S x 3 letterbox of image `index`, its labels normalised to it)."""
        loaded = self.load(index)
        img, scale, pad = letterbox(loaded, self.imgsz)
        h, w = loaded.shape[:2]
        return img, letterbox_boxes(self.labels[index], scale, pad, (w, h), self.imgsz)

    def _augmented(self, index: int, epoch: int, rng: np.random.Generator):
        size = self.imgsz
        if epoch < self.mosaic_epochs and rng.random() < self.hyp.mosaic:
            picks = [index, *(int(i) for i in rng.integers(0, len(self), size=3))]
            images = [self.load(i) for i in picks]
            canvas, classes, whole, visible = mosaic4(images, [self.labels[i] for i in picks], size, rng)
        else:
            canvas, labels = self._letterboxed(index)
            classes, whole = labels_to_xyxy(labels, size, size)
            visible = whole.clip(0, size)
        img, classes, boxes = random_affine(canvas, classes, whole, visible, size, self.hyp, rng)
        img = hsv_jitter(img, self.hyp, rng)
        img, boxes = flip_lr(img, boxes, self.hyp.fliplr, rng)
        return _as_tensors(img, xyxy_to_labels(classes, boxes, size), copy=False)


def _checked_labels(rows, path: str) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise DatasetError(
            f"{path}: labels must be rows of (class, cx, cy, w, h), got shape {list(arr.shape)}"
        )
    return arr


def _as_tensors(img: np.ndarray, labels: np.ndarray, copy: bool = True):
    """(image uint8 [3, S, S], labels float32 [n, 5]). With copy=False (training items, which only
    collate_detect reads) the image is a CHW view of the HxWx3 array, whatever its strides (interleaved
    pixels, or hsv_jitter's channel planes): the collate stacks them without a transposing copy."""
    import torch

    if copy:
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # HWC -> CHW, uint8
    else:
        image = torch.from_numpy(img).permute(2, 0, 1)
    return image, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32).reshape(-1, 5))


class ModelInputs:
    """A DetectDataset's items as a detector reads them: float images in [0, 1] (pixels / 255), with
    their labels; what calibration and parity checks take from `Task.image_dataset`."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, labels = self.dataset[index]
        return image.float().div_(255.0), labels


def collate_detect(batch, channels_last: bool = False):
    """[(image [3, S, S], labels [n_i, 5])] -> (images float32 [B, 3, S, S] in [0, 1], targets float32
    [M, 6] rows (batch index, class, cx, cy, w, h), M = sum n_i). uint8 images (DetectDataset's) are
    divided by 255; float ones (ModelInputs') are in [0, 1] already. `channels_last` (the train loader:
    the layout the trainer computes in on the CPU, optkit.train.memory_format): uint8 images are stacked
    as [B, S, S, 3] and divided into a channels-last float tensor, so the trainer's layout conversion is
    a no-op: two passes write the float batch instead of three (convert, divide, re-layout)."""
    import torch

    images = [image for image, _ in batch]
    if images and all(image.dtype == torch.uint8 for image in images):
        if channels_last:
            pixels = torch.stack([image.permute(1, 2, 0) for image in images])  # [B, S, S, 3]
            stacked = pixels.permute(0, 3, 1, 2)  # [B, 3, S, S] with channels-last strides
        else:
            stacked = torch.stack(images)
        # convert, then divide in place (the layout kept): the same floats as torch.div(stacked, 255.0),
        # whose mixed uint8 / float kernel took 2-4 ms of a 32 x 96 px batch here, against 0.1 ms
        images = stacked.float().div_(255.0)
    else:
        images = torch.stack(images).float()
    labels = [labels.float() for _, labels in batch]
    owner = torch.arange(len(labels), dtype=torch.float32).repeat_interleave(
        torch.tensor([len(rows) for rows in labels])
    )  # each row's batch index
    return images, torch.cat([owner[:, None], torch.cat(labels)], dim=1)
