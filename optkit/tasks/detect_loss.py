"""The detection loss of the anchor-free YOLOv8 design: task-aligned assignment, BCE class loss, CIoU box
loss and distribution focal loss (DFL).

Written from the published method: TOOD's assignment (optkit.tasks.detect_assign), CIoU (Zheng et al.,
2020) and DFL (Li et al., 2020, "Generalized Focal Loss"), with YOLOv8's gains (box 7.5, cls 0.5,
dfl 1.5) and its scaling (the sum of the three per-image losses, times the batch size).

The head's raw maps (optkit.models.yolo_det `Detect.raw`) hold, per anchor, 4 x reg_max box-distribution
logits (sides l, t, r, b) and nc class logits. A side's distance is the expectation of the softmax over
bins 0..reg_max-1, in units of the anchor's stride (optkit.models.anchors). Every positive anchor learns
its box through CIoU (the box as a whole) and DFL (each side's distribution, towards the two bins either
side of the true distance); every anchor learns its classes against the assigner's soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optkit.errors import DatasetError, ModelError
from optkit.limits import FieldError
from optkit.models.anchors import dist_to_xyxy, make_anchors, xyxy_to_dist
from optkit.tasks.detect_assign import Assignment, TaskAlignedAssigner, box_ciou


def candidate_min_side(strides) -> int:
    """Pixels: the side below which a ground-truth box is widened when the assigner picks its candidate
    anchors: the second-smallest stride (the only one when the head has one level). A 6 x 6 px box holds
    at most one stride-8 anchor point; widened to 16 x 16 px it holds four, so small boxes get several
    candidates for their top-k positives.
    The same floor as Ultralytics 8.4's assigner (its stride_val); measured on builtin:shapes-det,
    yolo-det-n, 96 px, 12 epochs, seeds 0/1/2: mAP50-95 0.699/0.704/0.701 with it, 0.687/0.694/0.691
    without (README, Detection)."""
    strides = sorted(strides)
    return strides[1] if len(strides) > 1 else strides[0]


class DetectionLoss:
    """`loss(raw, targets) -> (total, items)`.

    raw: the head's maps, one per stride, [B, 4 * reg_max + nc, H_i, W_i]; targets [M, 6] rows
    (batch index, class, cx, cy, w, h), box normalised to the network input, whose size is the first map's
    size times its stride. total: a scalar with gradient, (box + cls + dfl) x B; items: detached [3],
    the gained (box, cls, dfl) losses per image.
    """

    def __init__(self, nc: int, strides=(8, 16, 32), reg_max: int = 16, box: float = 7.5, cls: float = 0.5,
                 dfl: float = 1.5, topk: int = 10, alpha: float = 0.5, beta: float = 6.0):  # fmt: skip
        _require(nc >= 1, "nc", f"must be at least 1, got {nc}")
        _require(reg_max >= 2, "reg_max", f"must be at least 2 bins, got {reg_max}")
        _require(topk >= 1, "topk", f"must be at least 1, got {topk}")
        _require(
            len(strides) >= 1 and all(s > 0 for s in strides), "strides", f"must be positive, got {strides}"
        )
        for name, value in (("box", box), ("cls", cls), ("dfl", dfl), ("alpha", alpha), ("beta", beta)):
            _require(value >= 0, name, f"must be >= 0, got {value}")
        self.nc, self.strides, self.reg_max = nc, tuple(int(s) for s in strides), reg_max
        self.gains = (box, cls, dfl)
        self.assigner = TaskAlignedAssigner(
            nc, topk=topk, alpha=alpha, beta=beta, min_side=candidate_min_side(self.strides)
        )

    def __call__(self, raw, targets: torch.Tensor):
        # full precision even inside an autocast region: the DFL expectation and IoUs lose too much in fp16
        with torch.autocast(raw[0].device.type, enabled=False):
            return self._loss(raw, targets)

    def _loss(self, raw, targets: torch.Tensor):
        box_logits, cls_logits, shapes = self.split(raw)  # [B, N, 4, R], [B, N, nc]
        batch = cls_logits.shape[0]
        points, point_strides = make_anchors(shapes, self.strides, cls_logits.dtype, cls_logits.device)
        pred_boxes = dist_to_xyxy(dfl_expectation(box_logits), points)  # [B, N, 4] in stride units
        size_hw = (shapes[0][0] * self.strides[0], shapes[0][1] * self.strides[0])  # input pixels
        gt_labels, gt_boxes, gt_mask = self.targets_per_image(targets, batch, size_hw)
        assigned = self.assigner(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach() * point_strides,  # pixels: boxes of all levels compared on one scale
            points * point_strides,
            gt_labels,
            gt_boxes,
            gt_mask,
        )
        score_sum = assigned.scores.sum().clamp(min=1)  # YOLOv8's normaliser for all three terms
        cls_loss = (
            F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="sum") / score_sum
        )
        box_loss, dfl_loss = self._box_losses(box_logits, pred_boxes, points, point_strides, assigned)
        losses = torch.stack((box_loss / score_sum, cls_loss, dfl_loss / score_sum))
        losses = losses * losses.new_tensor(self.gains)
        return losses.sum() * batch, losses.detach()

    def split(self, raw):
        """The head's maps -> (box logits [B, N, 4, reg_max], class logits [B, N, nc], [(H_i, W_i)]), in
        float32 (the loss is computed in full precision under autocast too)."""
        if len(raw) != len(self.strides):
            raise ModelError(
                f"detection loss: the head gave {len(raw)} maps, strides {self.strides} need one each"
            )
        channels = 4 * self.reg_max + self.nc
        for level, level_map in enumerate(raw):
            if level_map.dim() != 4 or level_map.shape[1] != channels:
                raise ModelError(
                    f"detection loss: map {level} has shape {tuple(level_map.shape)}, expected "
                    f"[B, {channels}, H, W] (4 x {self.reg_max} box bins + {self.nc} classes)"
                )
        batch = raw[0].shape[0]
        flat = torch.cat([level_map.float().flatten(2) for level_map in raw], 2).permute(0, 2, 1)  # [B, N, C]
        box_logits, cls_logits = flat.split((4 * self.reg_max, self.nc), -1)
        shapes = [tuple(level_map.shape[2:]) for level_map in raw]
        return box_logits.reshape(batch, -1, 4, self.reg_max), cls_logits, shapes

    def targets_per_image(self, targets: torch.Tensor, batch: int, size_hw: tuple[int, int]):
        """targets [M, 6] (batch index, class, cx, cy, w, h; normalised) -> labels [B, K], boxes [B, K, 4]
        (x1 y1 x2 y2 in input pixels) and mask [B, K] (False on padding), K = most boxes in one image."""
        if targets.dim() != 2 or targets.shape[1] != 6:
            raise DatasetError(f"detection targets: expected shape [M, 6], got {tuple(targets.shape)}")
        targets = targets.to(dtype=torch.float32)
        image = targets[:, 0].long()
        self._check_targets(targets, image, batch)
        counts = torch.bincount(image, minlength=batch)
        most = int(counts.max()) if len(targets) else 0
        order = torch.argsort(image, stable=True)
        image, targets = image[order], targets[order]
        slot = torch.arange(len(targets), device=targets.device) - (counts.cumsum(0) - counts)[image]
        height, width = size_hw
        scale = targets.new_tensor((width, height, width, height))
        labels = targets.new_zeros(batch, most, dtype=torch.long)
        boxes = targets.new_zeros(batch, most, 4)
        mask = torch.zeros(batch, most, dtype=torch.bool, device=targets.device)
        labels[image, slot] = targets[:, 1].long()
        boxes[image, slot] = cxcywh_to_xyxy(targets[:, 2:6]) * scale
        mask[image, slot] = True
        return labels, boxes, mask

    def _check_targets(self, targets: torch.Tensor, image: torch.Tensor, batch: int) -> None:
        """Refuse a batch index outside the batch or a class outside 0..nc-1 (one device sync when fine)."""
        classes = targets[:, 1]
        bad_image = (image < 0) | (image >= batch)
        bad_class = (classes < 0) | (classes >= self.nc)
        if not bool((bad_image | bad_class).any()):
            return
        if bool(bad_image.any()):
            index = int(image[bad_image][0])
            raise DatasetError(f"detection targets: batch index {index} outside a batch of {batch}")
        value = float(classes[bad_class][0])
        raise DatasetError(f"detection targets: class {value:g} outside 0..{self.nc - 1}")

    def _box_losses(self, box_logits, pred_boxes, points, point_strides, assigned: Assignment):
        """Summed CIoU and DFL losses over the positive anchors, each weighted by the anchor's target score
        (an anchor that fits its box well counts more). Zero, with a gradient path, when there are none."""
        fg = assigned.fg  # [B, N]
        weight = assigned.scores.sum(-1)[fg]  # [P]
        target_boxes = (assigned.boxes / point_strides)[fg]  # stride units, like the predictions
        ciou = box_ciou(pred_boxes[fg], target_boxes)
        box_loss = ((1.0 - ciou) * weight).sum()
        fg_points = points.expand(fg.shape[0], -1, -1)[fg]  # [P, 2]
        # bins are 0..reg_max-1: distances clamp below reg_max-1 so the upper neighbour bin is <= reg_max-1
        target_dist = xyxy_to_dist(fg_points, target_boxes, self.reg_max - 1)
        dfl = distribution_focal_loss(box_logits[fg], target_dist)  # [P]
        return box_loss, (dfl * weight).sum()


def dfl_expectation(box_logits: torch.Tensor) -> torch.Tensor:
    """Box-distribution logits [..., 4, R] -> the four distances [..., 4], the expectation of the softmax
    over bins 0..R-1 (units: the anchor's stride)."""
    bins = torch.arange(box_logits.shape[-1], dtype=box_logits.dtype, device=box_logits.device)
    return box_logits.softmax(-1) @ bins


def distribution_focal_loss(box_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL (Generalized Focal Loss): cross-entropy of each side's distribution [P, 4, R] towards the two
    bins either side of its target distance [P, 4] (in [0, R-1)), weighted by linear interpolation
    (distance 3.3 -> 0.7 on bin 3, 0.3 on bin 4). Minimal when the softmax puts exactly that mass there.
    Returns the mean over the four sides, [P]."""
    left = target.long()  # floor (target >= 0); the caller keeps target < R - 1 so left + 1 is a bin
    left_weight = (left + 1).to(target.dtype) - target
    log_probs = box_logits.log_softmax(-1)
    left_log = log_probs.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    right_log = log_probs.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    return -(left_log * left_weight + right_log * (1 - left_weight)).mean(-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), -1)


def _require(ok: bool, field: str, detail: str) -> None:
    if not ok:
        raise FieldError(field, detail)
