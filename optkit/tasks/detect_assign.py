"""Box overlap (IoU, CIoU) and the task-aligned assigner of the detection loss (optkit.tasks.detect_loss).

The assigner follows TOOD (Feng et al., 2021, "Task-aligned One-stage Object Detection") as the
anchor-free YOLOv8 design uses it: an anchor point is a candidate for a ground-truth box when it lies
inside the box (a side shorter than `min_side` widened to it about the centre, so that a small box has
more than one candidate; DetectionLoss sets the floor, optkit.tasks.detect_loss.candidate_min_side); each
candidate is scored by how well the current prediction already fits the box, t = s^alpha * u^beta (s the
predicted probability of the box's class, u the IoU of the predicted box with it); the top-k candidates by
t are the box's positives. Each positive learns the box's class with a soft target t / max(t) * max(u)
(both maxima over the box's positives), so the best-fitting anchor of a box aims at that box's best IoU
and the others at less. All of it is vectorised over [batch, boxes, anchors].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IOU_EPS = 1e-7  # added to areas and heights so empty or flat boxes divide safely
INSIDE_EPS = 1e-9  # a point on a box's edge (distance 0) is not inside it; pixels


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """IoU of (x1, y1, x2, y2) boxes `a` and `b` (broadcast over the leading dims; last dim 4).
    Returns [...] in [0, 1]."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter + eps
    return inter / union


def box_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """Complete IoU (Zheng et al., 2020, "Enhancing Geometric Factors in Model Learning and Inference for
    Object Detection and Instance Segmentation") of (x1, y1, x2, y2) boxes, broadcast like box_iou:

        CIoU = IoU - rho^2 / c^2 - alpha * v
        rho = distance between the centres, c = diagonal of the smallest box enclosing both,
        v = 4 / pi^2 * (atan(w_b / h_b) - atan(w_a / h_a))^2   (aspect-ratio mismatch),
        alpha = v / (1 - IoU + v)                               (a weight; no gradient flows through it).

    In [-1, 1]; 1 for identical boxes; equal to the IoU when the centres and the aspect ratios agree.
    """
    w_a, h_a = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    w_b, h_b = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    inter = _intersection(a, b)
    iou = inter / (w_a * h_a + w_b * h_b - inter + eps)
    enclose_w = torch.max(a[..., 2], b[..., 2]) - torch.min(a[..., 0], b[..., 0])
    enclose_h = torch.max(a[..., 3], b[..., 3]) - torch.min(a[..., 1], b[..., 1])
    diagonal2 = enclose_w**2 + enclose_h**2 + eps
    # squared centre distance: the centres are (x1 + x2) / 2, so halve the summed differences
    centre2 = ((b[..., 0] + b[..., 2] - a[..., 0] - a[..., 2]) ** 2
               + (b[..., 1] + b[..., 3] - a[..., 1] - a[..., 3]) ** 2) / 4  # fmt: skip
    v = (4 / math.pi**2) * (torch.atan(w_b / h_b) - torch.atan(w_a / h_a)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diagonal2 + alpha * v)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = (torch.min(a[..., 2], b[..., 2]) - torch.max(a[..., 0], b[..., 0])).clamp(min=0)
    height = (torch.min(a[..., 3], b[..., 3]) - torch.max(a[..., 1], b[..., 1])).clamp(min=0)
    return width * height


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor, eps: float = INSIDE_EPS) -> torch.Tensor:
    """Which `points` [N, 2] (x, y) lie strictly inside which `boxes` [B, M, 4] (x1, y1, x2, y2), the
    same units. Returns a bool tensor [B, M, N]."""
    x, y = points[:, 0], points[:, 1]
    boxes = boxes.unsqueeze(-1)  # [B, M, 4, 1] against [N]
    margins = torch.stack((x - boxes[:, :, 0], y - boxes[:, :, 1], boxes[:, :, 2] - x, boxes[:, :, 3] - y))
    return margins.amin(0) > eps


def widened(boxes: torch.Tensor, min_side: float) -> torch.Tensor:
    """`boxes` [..., 4] (x1, y1, x2, y2) with each side shorter than `min_side` widened to it about the
    box's centre; longer sides are kept."""
    if min_side <= 0:
        return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = ((boxes[..., 2:] - boxes[..., :2]).clamp(min=min_side)) / 2
    return torch.cat((centre - half, centre + half), -1)


@dataclass
class Assignment:
    """What each anchor of each image learns. labels [B, N] (class of the assigned box; 0 where none),
    boxes [B, N, 4] (the assigned box, x1 y1 x2 y2 in pixels; 0 where none), scores [B, N, nc] (the soft
    class target: one-hot class x normalised alignment; all 0 for a background anchor), fg [B, N] bool
    (the anchor is a positive of some box), gt_index [B, N] (which box; 0 where none)."""

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    fg: torch.Tensor
    gt_index: torch.Tensor


class TaskAlignedAssigner:
    """TOOD's task-aligned assignment (module docstring): top-`topk` candidates per ground-truth box by
    t = s^alpha * u^beta, among the anchors that lie inside it."""

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9,
                 min_side: float = 0.0):  # fmt: skip
        self.nc, self.topk, self.alpha, self.beta, self.eps = nc, topk, alpha, beta, eps
        self.min_side = min_side

    @torch.no_grad()
    def __call__(self, scores, pred_boxes, points, gt_labels, gt_boxes, gt_mask) -> Assignment:
        """scores [B, N, nc] predicted class probabilities (after sigmoid); pred_boxes [B, N, 4] and
        gt_boxes [B, M, 4] x1 y1 x2 y2 in pixels; points [N, 2] anchor points in pixels; gt_labels [B, M]
        class ids; gt_mask [B, M] bool, False for the padding rows of images with fewer than M boxes."""
        batch, anchors = scores.shape[:2]
        if gt_boxes.shape[1] == 0:  # not one box in the whole batch: every anchor is background
            return _background(batch, anchors, self.nc, scores)
        candidates = points_in_boxes(points, widened(gt_boxes, self.min_side)) & gt_mask.unsqueeze(-1)
        overlaps = box_iou(gt_boxes.unsqueeze(2), pred_boxes.unsqueeze(1)).clamp(min=0) * candidates
        class_scores = scores.permute(0, 2, 1).gather(
            1, gt_labels.long().unsqueeze(-1).expand(-1, -1, anchors)
        )
        metric = class_scores.pow(self.alpha) * overlaps.pow(self.beta) * candidates  # [B, M, N]
        positives = self._top_candidates(metric, candidates)
        positives = _one_box_per_anchor(positives, overlaps)
        return self._targets(positives, metric, overlaps, gt_labels, gt_boxes)

    def _top_candidates(self, metric: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, M, N] bool: the `topk` anchors of highest metric of each box, kept only where they are
        candidates (a box with fewer than topk candidates gets fewer positives, never an outside anchor)."""
        k = min(self.topk, metric.shape[-1])
        top = metric.topk(k, dim=-1).indices  # [B, M, k]
        chosen = torch.zeros_like(candidates).scatter_(-1, top, True)
        return chosen & candidates

    def _targets(self, positives, metric, overlaps, gt_labels, gt_boxes) -> Assignment:
        fg = positives.any(1)  # [B, N]
        gt_index = positives.to(torch.uint8).argmax(1)  # [B, N]; one True per fg anchor (0 elsewhere)
        labels = gt_labels.long().gather(1, gt_index) * fg
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4)) * fg.unsqueeze(-1)
        # normalised alignment: t / max t of the box, times the box's best IoU (maxima over its positives)
        metric, overlaps = metric * positives, overlaps * positives
        best_metric = metric.amax(-1, keepdim=True)  # [B, M, 1]
        best_overlap = overlaps.amax(-1, keepdim=True)
        alignment = (metric * best_overlap / (best_metric + self.eps)).amax(1)  # [B, N]
        one_hot = torch.nn.functional.one_hot(labels, self.nc).to(alignment.dtype)
        scores = one_hot * (alignment * fg).unsqueeze(-1)
        return Assignment(labels, boxes, scores, fg, gt_index)


def _one_box_per_anchor(positives: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """An anchor that is a positive of several boxes stays a positive of the one its predicted box
    overlaps most (IoU), among those boxes only. [B, M, N] bool -> the same with <= 1 True per anchor."""
    contested = positives.sum(1, keepdim=True) > 1  # [B, 1, N]
    best = (overlaps * positives).argmax(1, keepdim=True)  # [B, 1, N]
    only_best = torch.zeros_like(positives).scatter_(1, best, True)
    return torch.where(contested, only_best & positives, positives)


def _background(batch: int, anchors: int, nc: int, like: torch.Tensor) -> Assignment:
    zeros_long = torch.zeros(batch, anchors, dtype=torch.long, device=like.device)
    return Assignment(
        labels=zeros_long,
        boxes=like.new_zeros(batch, anchors, 4),
        scores=like.new_zeros(batch, anchors, nc),
        fg=torch.zeros(batch, anchors, dtype=torch.bool, device=like.device),
        gt_index=zeros_long.clone(),
    )
