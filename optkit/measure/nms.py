"""Non-maximum suppression of a detector's decoded output, in plain torch (torchvision's `nms` is not
available: docs/architecture.md keeps optkit on the CPU torch wheel, which has no matching torchvision).

`non_max_suppression` takes the [B, 4 + nc, N] layout of optkit's and Ultralytics' detectors (box centre x,
centre y, width, height in input pixels, then class probabilities) and returns, per image, the kept boxes
as rows (x1, y1, x2, y2, score, class), highest score first.

The result is exactly that of the textbook greedy algorithm run per class: visit the candidates in
descending score (ties in candidate order: anchor, then class), keep one unless its IoU with a box already
kept *of the same class* is > `iou`, stop after `max_det` kept. The usual batched form offsets each class's
boxes by class x 7680 px so that classes cannot overlap; here the IoU of two boxes of different classes is
set to 0 instead, which is the same rule without the offset's float32 rounding (at class 80 x 7680 px a
float32 coordinate keeps only 1/16 px) and without its limit on image size.

Speed: candidates are resolved in score-sorted blocks of `_BLOCK`: a block is first cleared against the
boxes already kept (one [block, kept] IoU matrix), then its survivors are resolved among themselves by
iterating keep[j] = not any(keep[i] and IoU[i, j] > iou for i < j) to its fixed point. The system is
triangular, so after t rounds the first t entries are final and the fixed point is the greedy answer; it is
usually reached in a few rounds. Blocks stop as soon as `max_det` boxes are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_BLOCK = 512  # candidates resolved together: a [512, 512] IoU matrix, 1 MB in float32


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [..., 4] (centre x, centre y, width, height) -> (x1, y1, x2, y2), same units."""
    import torch

    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [N, M] of boxes a [N, 4] and b [M, 4], both (x1, y1, x2, y2). Two boxes whose union
    has no area (degenerate boxes) have IoU 0."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = (bottom_right - top_left).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    # union == 0 only when inter == 0 too: 0 / tiny = 0 (not NaN)
    return inter / union.clamp_min(torch.finfo(union.dtype).tiny)


def non_max_suppression(
    pred: torch.Tensor,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = False,
    agnostic: bool = False,
    classes=None,
    max_candidates: int = 30000,
) -> list[torch.Tensor]:
    """Per image of `pred` [B, 4 + nc, N], a float32 tensor [n, 6] of (x1, y1, x2, y2, score, class),
    score descending, n <= max_det (see the module docstring for the exact rule).

    Candidates: every (box, class) pair with probability > `conf` when `multi_label`, else each box's
    best class if its probability is > `conf`; only classes in `classes` (ids) when given; the
    `max_candidates` highest scores of those. `agnostic`: boxes of different classes suppress each other.
    """
    import torch

    if pred.ndim != 3 or pred.shape[1] < 5:
        from optkit.errors import ModelError

        raise ModelError(
            f"detector output has shape {list(pred.shape)}, expected [batch, 4 + classes, anchors]"
        )
    pred = pred.detach().float()
    wanted = None if classes is None else torch.as_tensor(list(classes), device=pred.device)
    out = []
    for image in pred:
        boxes, scores, labels = _candidates(image, conf, multi_label, wanted, max_candidates)
        keep = greedy_nms(boxes, None if agnostic else labels, iou, max_det)
        out.append(torch.cat((boxes[keep], scores[keep, None], labels[keep, None].float()), dim=1))
    return out


def _candidates(image: torch.Tensor, conf: float, multi_label: bool, wanted, max_candidates: int):
    """(xyxy boxes [n, 4], scores [n], class ids [n]) of one image's [4 + nc, N] output, sorted by score
    descending (stable: ties stay in anchor, then class, order), at most `max_candidates`."""
    import torch

    probs = image[4:].T  # [N, nc]
    if multi_label:
        anchor, label = (probs > conf).nonzero(as_tuple=True)  # row-major: anchor, then class
        score = probs[anchor, label]
    else:
        score, label = probs.max(dim=1)  # first class among equal maxima
        anchor = (score > conf).nonzero(as_tuple=True)[0]
        score, label = score[anchor], label[anchor]
    if wanted is not None:
        chosen = torch.isin(label, wanted)
        anchor, score, label = anchor[chosen], score[chosen], label[chosen]
    order = torch.sort(score, descending=True, stable=True).indices[:max_candidates]
    anchor, score, label = anchor[order], score[order], label[order]
    return xywh_to_xyxy(image[:4, anchor].T), score, label


def greedy_nms(boxes: torch.Tensor, labels: torch.Tensor | None, iou: float, max_det: int) -> torch.Tensor:
    """Indices (ascending) of the boxes [n, 4] (xyxy, already sorted by score descending) that greedy NMS
    keeps, at most `max_det`. `labels` [n]: boxes of different labels never suppress each other; None:
    every box can suppress every other (class-agnostic)."""
    import torch

    kept: list[torch.Tensor] = []
    kept_count = 0
    kept_boxes, kept_labels = boxes[:0], None if labels is None else labels[:0]
    for start in range(0, len(boxes), _BLOCK):
        if kept_count >= max_det:
            break
        block = boxes[start : start + _BLOCK]
        block_labels = None if labels is None else labels[start : start + _BLOCK]
        alive = (~_overlaps(block, block_labels, kept_boxes, kept_labels, iou).any(dim=1)).nonzero()[:, 0]
        alive_labels = None if labels is None else block_labels[alive]
        # [i, j]: i < j (score order) and i would suppress j
        within = _overlaps(block[alive], alive_labels, block[alive], alive_labels, iou).triu(diagonal=1)
        index = alive[_resolve(within)][: max_det - kept_count]
        kept.append(index + start)
        kept_count += len(index)
        kept_boxes = torch.cat((kept_boxes, block[index]))
        if labels is not None:
            kept_labels = torch.cat((kept_labels, block_labels[index]))
    return torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)


def _overlaps(a, a_labels, b, b_labels, iou: float) -> torch.Tensor:
    """[len(a), len(b)] bool: IoU > `iou` and (when labels are given) the same label."""
    over = box_iou(a, b) > iou
    if a_labels is not None:
        over &= a_labels[:, None] == b_labels[None, :]
    return over


def _resolve(suppresses: torch.Tensor) -> torch.Tensor:
    """The greedy keep mask of boxes in score order, given `suppresses` [n, n] (strictly upper triangular:
    an earlier box that would suppress a later one): the fixed point of keep = ~(keep @ suppresses)."""
    import torch

    keep = torch.ones(len(suppresses), dtype=torch.bool, device=suppresses.device)
    for _ in range(len(keep) + 1):  # at most len(keep) rounds change anything (module docstring)
        updated = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(updated, keep):
            break
        keep = updated
    return keep
