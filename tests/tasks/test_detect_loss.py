"""The detection loss (optkit.tasks.detect_loss), its assigner and box overlaps (optkit.tasks.detect_assign):
CIoU against hand-computed values, the task-aligned assignment's rules, DFL's minimum, background images, and
a tiny detector that overfits one batch through the loss until its top boxes land on the ground truth."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optkit.errors import DatasetError, ModelError
from optkit.limits import FieldError
from optkit.models.anchors import dist_to_xyxy, make_anchors
from optkit.tasks.detect_assign import TaskAlignedAssigner, box_ciou, box_iou, points_in_boxes, widened
from optkit.tasks.detect_loss import (
    DetectionLoss,
    candidate_min_side,
    dfl_expectation,
    distribution_focal_loss,
)

NC = 3
REG_MAX = 16
STRIDES = (8, 16, 32)


def _raw(batch=2, size=64, nc=NC, seed=0, requires_grad=True):
    """Random head maps for a `size` px input: [B, 64 + nc, size / s, size / s] per stride."""
    generator = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, 4 * REG_MAX + nc, size // s, size // s, generator=generator) for s in STRIDES]
    return [m.requires_grad_(requires_grad) for m in maps]


# ---- box overlaps ------------------------------------------------------------------------------------------


def test_ciou_matches_a_hand_computed_value():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])  # 2 x 2, centre (1, 1)
    b = torch.tensor([1.0, 0.0, 3.0, 4.0])  # 2 x 4, centre (2, 2)
    # intersection 1 x 2 = 2, union 4 + 8 - 2 = 10 -> IoU 0.2
    # centre distance^2 = 1 + 1 = 2; enclosing box 3 x 4 -> diagonal^2 = 25
    v = 4 / math.pi**2 * (math.atan(2 / 4) - math.atan(2 / 2)) ** 2  # 0.0419562
    alpha = v / (1 - 0.2 + v)  # 0.0498318
    expected = 0.2 - 2 / 25 - alpha * v  # 0.1179092
    assert expected == pytest.approx(0.1179092, abs=1e-6)
    assert float(box_ciou(a, b)) == pytest.approx(expected, abs=1e-5)
    assert float(box_ciou(b, a)) == pytest.approx(expected, abs=1e-5)  # symmetric
    assert float(box_iou(a, b)) == pytest.approx(0.2, abs=1e-6)


def test_ciou_equals_iou_when_centres_and_aspect_agree():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0], [10.0, 10.0, 16.0, 13.0]])
    b = torch.tensor([[1.0, 0.5, 3.0, 1.5], [11.0, 10.5, 15.0, 12.5]])  # same centres, same 2:1 aspect
    iou = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([2 / 8, 8 / 18]), atol=1e-6)
    assert torch.allclose(box_ciou(a, b), iou, atol=1e-6)
    assert torch.allclose(box_ciou(a, a), torch.ones(2), atol=1e-6)
    shifted = b + torch.tensor([1.0, 0.0, 1.0, 0.0])  # centre moved: CIoU drops below IoU
    assert (box_ciou(a, shifted) < box_iou(a, shifted) - 1e-3).all()


def test_ciou_of_disjoint_boxes_is_negative_and_iou_zero():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([5.0, 5.0, 7.0, 7.0])
    assert float(box_iou(a, b)) == 0.0
    # IoU 0, centres 5 * sqrt(2) apart, enclosing diagonal 7 * sqrt(2): -(50 / 98), v = 0
    assert float(box_ciou(a, b)) == pytest.approx(-50 / 98, abs=1e-5)


def test_ciou_gradient_is_finite_for_identical_and_flat_boxes():
    pred = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 1.0]], requires_grad=True)  # second is flat
    target = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    (1 - box_ciou(pred, target)).sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_points_in_boxes_excludes_edges():
    points = torch.tensor([[5.0, 5.0], [10.0, 5.0], [11.0, 5.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    assert points_in_boxes(points, boxes).tolist() == [[[True, False, False]]]


# ---- the assigner ------------------------------------------------------------------------------------------


def _grid(size=64, stride=8):
    """Anchor points (pixels) of one level: cell centres."""
    points, strides = make_anchors([(size // stride, size // stride)], [stride])
    return points * strides


def _boxes_around(points, half=6.0):
    return torch.cat((points - half, points + half), -1)


def test_assigned_anchors_lie_inside_their_box_and_padding_is_never_assigned():
    generator = torch.Generator().manual_seed(1)
    points = _grid()  # 64 anchors
    pred = _boxes_around(points).unsqueeze(0).repeat(2, 1, 1) + torch.rand(2, 64, 4, generator=generator) * 4
    scores = torch.rand(2, 64, NC, generator=generator)
    gt_boxes = torch.tensor(
        [[[4.0, 4.0, 30.0, 26.0], [34.0, 30.0, 60.0, 62.0]], [[10.0, 10.0, 50.0, 40.0], [0, 0, 64, 64]]]
    )
    gt_labels = torch.tensor([[0, 2], [1, 0]])
    gt_mask = torch.tensor([[True, True], [True, False]])  # image 1's second row is padding (covers all)
    result = TaskAlignedAssigner(NC, topk=10)(scores, pred, points, gt_labels, gt_boxes, gt_mask)
    inside = points_in_boxes(points, gt_boxes)  # [B, M, N]
    for image in range(2):
        for anchor in torch.nonzero(result.fg[image]).flatten().tolist():
            box = int(result.gt_index[image, anchor])
            assert gt_mask[image, box], "a padding row was assigned"
            assert inside[image, box, anchor], "an anchor outside its box is positive"
            assert torch.equal(result.boxes[image, anchor], gt_boxes[image, box])
            assert int(result.labels[image, anchor]) == int(gt_labels[image, box])
    outside_all = ~(inside & gt_mask.unsqueeze(-1)).any(1)
    assert outside_all.any() and not (result.fg & outside_all).any()
    assert not result.scores[~result.fg].any() and not result.boxes[~result.fg].any()


def test_topk_limits_the_positives_and_picks_the_best_aligned():
    points = _grid()  # 64 anchors, all inside the one box below
    generator = torch.Generator().manual_seed(2)
    pred = (_boxes_around(points) + torch.rand(64, 4, generator=generator) * 8).unsqueeze(0)
    scores = torch.rand(1, 64, NC, generator=generator)
    gt_boxes = torch.tensor([[[0.5, 0.5, 63.5, 63.5]]])
    gt_labels, gt_mask = torch.tensor([[1]]), torch.tensor([[True]])
    metric = scores[0, :, 1] ** 0.5 * box_iou(gt_boxes[0], pred[0]) ** 6.0
    for k in (10, 3):
        result = TaskAlignedAssigner(NC, topk=k)(scores, pred, points, gt_labels, gt_boxes, gt_mask)
        assert int(result.fg.sum()) == k
        assert set(torch.nonzero(result.fg[0]).flatten().tolist()) == set(metric.topk(k).indices.tolist())


def test_a_box_with_fewer_candidates_than_topk_gets_only_its_candidates():
    points = _grid()
    pred = _boxes_around(points).unsqueeze(0)
    scores = torch.full((1, 64, NC), 0.5)
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0]]])  # holds the anchors (4, 4) and (12, 4) only
    result = TaskAlignedAssigner(NC, topk=10)(
        scores, pred, points, torch.tensor([[0]]), gt_boxes, torch.tensor([[True]])
    )
    assert torch.nonzero(result.fg[0]).flatten().tolist() == [0, 1]


def test_widened_floors_short_sides_about_the_centre():
    boxes = torch.tensor([[10.0, 10.0, 14.0, 40.0], [0.0, 0.0, 30.0, 20.0]])
    assert torch.equal(widened(boxes, 16), torch.tensor([[4.0, 10.0, 20.0, 40.0], [0.0, 0.0, 30.0, 20.0]]))
    assert widened(boxes, 0) is boxes


def test_a_tiny_box_gets_the_anchors_of_its_widened_box_as_candidates():
    points = _grid()  # stride-8 cell centres 4, 12, 20, ...
    pred = _boxes_around(points).unsqueeze(0)
    scores = torch.full((1, 64, NC), 0.5)
    gt_boxes = torch.tensor([[[7.0, 7.0, 13.0, 13.0]]])  # 6 px: holds the anchor (12, 12) only
    args = (scores, pred, points, torch.tensor([[0]]), gt_boxes, torch.tensor([[True]]))
    alone = TaskAlignedAssigner(NC, topk=10)(*args)
    assert torch.nonzero(alone.fg[0]).flatten().tolist() == [9]
    floored = TaskAlignedAssigner(NC, topk=10, min_side=16)(*args)  # (2, 2, 18, 18): (4|12, 4|12)
    assert torch.nonzero(floored.fg[0]).flatten().tolist() == [0, 1, 8, 9]
    assert torch.equal(floored.boxes[0, 0], gt_boxes[0, 0])  # they learn the box itself


def test_the_loss_floors_boxes_at_the_second_smallest_stride():
    assert candidate_min_side((8, 16, 32)) == 16
    assert candidate_min_side((32, 8, 16)) == 16
    assert candidate_min_side((8,)) == 8
    assert DetectionLoss(NC, strides=STRIDES).assigner.min_side == 16


def test_an_anchor_claimed_by_two_boxes_goes_to_the_one_it_overlaps_most():
    points = torch.tensor([[10.0, 10.0]])  # one anchor, inside both boxes
    box_a, box_b = [0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 30.0, 30.0]
    scores = torch.full((1, 1, NC), 0.5)
    assigner = TaskAlignedAssigner(NC, topk=10)
    mask = torch.tensor([[True, True]])
    for pred_box, winner in ((box_a, box_a), (box_b, box_b)):
        for order in ((box_a, box_b), (box_b, box_a)):  # the winner does not depend on the boxes' order
            labels = torch.tensor([[0 if order[0] is box_a else 2, 2 if order[0] is box_a else 0]])
            result = assigner(scores, torch.tensor([[pred_box]]), points, labels, torch.tensor([order]), mask)
            assert bool(result.fg[0, 0])
            assert result.boxes[0, 0].tolist() == winner
            assert int(result.labels[0, 0]) == (0 if winner is box_a else 2)
            assert int(result.gt_index[0, 0]) == order.index(winner)


def test_target_scores_are_alignment_normalised_to_the_best_iou():
    points = _grid()
    generator = torch.Generator().manual_seed(3)
    pred = (_boxes_around(points, half=10.0) + torch.rand(64, 4, generator=generator) * 6).unsqueeze(0)
    scores = torch.rand(1, 64, NC, generator=generator)
    gt_boxes = torch.tensor([[[8.0, 8.0, 40.0, 36.0]]])
    result = TaskAlignedAssigner(NC, topk=5)(
        scores, pred, points, torch.tensor([[2]]), gt_boxes, torch.tensor([[True]])
    )
    fg = result.fg[0]
    iou = box_iou(gt_boxes[0], pred[0])[fg]
    metric = scores[0, fg, 2] ** 0.5 * iou**6.0
    expected = metric / metric.max() * iou.max()
    assert torch.allclose(result.scores[0, fg, 2], expected, atol=1e-6)
    assert not result.scores[0, :, :2].any()  # only the box's own class is a target
    assert float(result.scores[0, fg, 2].max()) == pytest.approx(float(iou.max()), abs=1e-6)


def test_an_image_without_boxes_has_no_positives():
    points = _grid()
    pred = _boxes_around(points).unsqueeze(0).repeat(2, 1, 1)
    scores = torch.full((2, 64, NC), 0.5)
    gt_boxes = torch.tensor([[[8.0, 8.0, 40.0, 36.0]], [[0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True], [False]])
    result = TaskAlignedAssigner(NC)(scores, pred, points, torch.tensor([[1], [0]]), gt_boxes, mask)
    assert result.fg[0].any() and not result.fg[1].any()
    assert not result.scores[1].any()


# ---- DFL ---------------------------------------------------------------------------------------------------


def test_dfl_is_minimal_at_the_two_neighbouring_bins():
    target = torch.tensor([[3.3, 0.0, 7.5, 14.99]])  # 14.99: the largest distance (reg_max - 1 - 0.01)
    logits = torch.zeros(1, 4, REG_MAX, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.2)
    for _ in range(400):
        optimizer.zero_grad()
        distribution_focal_loss(logits, target).sum().backward()
        optimizer.step()
    probs = logits.detach().softmax(-1)[0]
    for side, (left, left_mass) in enumerate(((3, 0.7), (0, 1.0), (7, 0.5), (14, 0.01))):
        assert float(probs[side, left]) == pytest.approx(left_mass, abs=0.02)
        assert float(probs[side, left + 1]) == pytest.approx(1 - left_mass, abs=0.02)
    assert torch.allclose(dfl_expectation(logits.detach()), target, atol=0.05)
    # the minimum is the entropy of the two-bin target: cross-entropy = entropy when the distributions match
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    at_target = torch.full((1, 1, REG_MAX), -30.0)
    at_target[0, 0, 3], at_target[0, 0, 4] = math.log(0.7), math.log(0.3)
    assert float(distribution_focal_loss(at_target, target[:, :1])) == pytest.approx(entropy, abs=1e-4)
    shifted = at_target.roll(1, -1)  # the same shape one bin too far
    assert float(distribution_focal_loss(shifted, target[:, :1])) > entropy + 1.0


def test_far_boxes_clamp_to_the_last_valid_bins():
    """Distances clamp to reg_max - 1 - 0.01 (14.99): the upper neighbour bin is 15, the last of 0..15.
    A box far larger than 15 strides must neither index past the bins nor give a non-finite loss."""
    loss = DetectionLoss(NC, strides=(8,))  # one level, so the positives are stride-8 anchors
    raw = [
        torch.randn(
            1, 4 * REG_MAX + NC, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True
        )
    ]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 1.0, 1.0]])  # the whole 256 px input: 15.5..16.5 cells per side
    total, items = loss(raw, targets)
    total.backward()
    assert torch.isfinite(total) and items[0] > 0 and items[2] > 0
    assert torch.isfinite(raw[0].grad).all()


# ---- the loss ----------------------------------------------------------------------------------------------


def _targets():
    # image 0: two boxes, image 1: one box; (batch index, class, cx, cy, w, h) normalised
    return torch.tensor(
        [[0, 0, 0.35, 0.3, 0.4, 0.35], [1, 2, 0.5, 0.55, 0.6, 0.45], [0, 1, 0.78, 0.7, 0.3, 0.4]]
    )


def test_total_is_the_items_sum_times_the_batch_and_gradients_are_finite():
    raw = _raw()
    total, items = DetectionLoss(NC)(raw, _targets())
    assert items.shape == (3,) and not items.requires_grad and (items > 0).all()
    assert float(total.detach()) == pytest.approx(float(items.sum()) * 2, rel=1e-6)
    total.backward()
    assert all(torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0 for m in raw)


def test_gains_scale_their_items():
    raw = _raw(requires_grad=False)
    _, base = DetectionLoss(NC, box=1.0, cls=1.0, dfl=1.0)(raw, _targets())
    _, gained = DetectionLoss(NC)(raw, _targets())
    assert torch.allclose(gained, base * torch.tensor([7.5, 0.5, 1.5]), rtol=1e-5)


def test_an_all_background_batch_has_only_a_class_loss():
    raw = _raw()
    total, items = DetectionLoss(NC)(raw, torch.zeros(0, 6))
    assert torch.isfinite(total) and items[0] == 0 and items[2] == 0 and items[1] > 0
    total.backward()
    assert all(torch.isfinite(m.grad).all() for m in raw)
    class_grad = raw[0].grad[:, 4 * REG_MAX :]
    assert (class_grad > 0).all()  # every class logit is pushed down (all targets 0)
    assert not raw[0].grad[:, : 4 * REG_MAX].any()


def test_a_background_image_gets_no_box_gradient():
    raw = _raw()
    targets = _targets()[_targets()[:, 0] == 0]  # image 1 has no boxes
    total, items = DetectionLoss(NC)(raw, targets)
    total.backward()
    assert items[0] > 0 and items[2] > 0
    box_grads = [m.grad[:, : 4 * REG_MAX] for m in raw]
    assert any(g[0].abs().sum() > 0 for g in box_grads)
    assert not any(g[1].any() for g in box_grads)


def test_targets_are_padded_per_image_in_pixels():
    loss = DetectionLoss(NC)
    labels, boxes, mask = loss.targets_per_image(_targets(), batch=3, size_hw=(64, 128))
    assert labels.tolist() == [[0, 1], [2, 0], [0, 0]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    # (0.35, 0.3, 0.4, 0.35) of 128 x 64 px -> x 19.2..70.4, y 8..30.4
    assert torch.allclose(boxes[0, 0], torch.tensor([19.2, 8.0, 70.4, 30.4]), atol=1e-4)
    empty = loss.targets_per_image(torch.zeros(0, 6), batch=2, size_hw=(64, 64))
    assert [tuple(t.shape) for t in empty] == [(2, 0), (2, 0, 4), (2, 0)]


def test_non_square_input_size_comes_from_the_first_map():
    raw = [torch.randn(1, 4 * REG_MAX + NC, 64 // s, 128 // s) for s in STRIDES]  # 64 x 128 px input
    total, items = DetectionLoss(NC)(raw, _targets()[:1])
    assert torch.isfinite(total) and items[0] > 0


def test_the_loss_is_computed_in_float32_under_autocast():
    half = [m.to(torch.bfloat16) for m in _raw(requires_grad=False)]  # what a bf16 head gives
    reference, _ = DetectionLoss(NC)([m.float() for m in half], _targets())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, items = DetectionLoss(NC)(half, _targets())
    assert total.dtype == torch.float32 and items.dtype == torch.float32
    assert float(total) == pytest.approx(float(reference), rel=1e-6)  # bf16 matmuls would differ by ~1e-3


def test_bad_inputs_are_refused_in_one_line():
    loss = DetectionLoss(NC)
    with pytest.raises(ModelError, match="map 0 has shape"):
        loss([torch.zeros(1, 10, 8, 8)] * 3, torch.zeros(0, 6))
    with pytest.raises(ModelError, match="2 maps"):
        loss(_raw()[:2], torch.zeros(0, 6))
    with pytest.raises(DatasetError, match="class 3 outside 0..2"):
        loss(_raw(), torch.tensor([[0, 3, 0.5, 0.5, 0.2, 0.2]]))
    with pytest.raises(DatasetError, match="batch index 2"):
        loss(_raw(), torch.tensor([[2, 0, 0.5, 0.5, 0.2, 0.2]]))
    with pytest.raises(DatasetError, match=r"\[M, 6\]"):
        loss(_raw(), torch.zeros(2, 5))
    with pytest.raises(FieldError, match="nc must be at least 1"):
        DetectionLoss(0)


# ---- overfitting one batch ---------------------------------------------------------------------------------


class TinyDetector(nn.Module):
    """Head maps at strides 8 / 16 / 32 from a [B, 3, 64, 64] input: a few strided convs and one 1x1 head
    per level with 4 x 16 box bins + nc classes (box bias 1, class bias at a 1% prior, as detectors start)."""

    def __init__(self, nc: int, width: int = 32):
        super().__init__()

        def down(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.SiLU())

        self.to8 = nn.Sequential(
            down(3, 16), down(16, width), down(width, width), nn.Conv2d(width, width, 3, 1, 1), nn.SiLU()
        )
        self.to16, self.to32 = down(width, width), down(width, width)
        self.heads = nn.ModuleList(nn.Conv2d(width, 4 * REG_MAX + nc, 1) for _ in STRIDES)
        for head in self.heads:
            nn.init.constant_(head.bias[: 4 * REG_MAX], 1.0)
            nn.init.constant_(head.bias[4 * REG_MAX :], math.log(0.01 / 0.99))

    def forward(self, x):
        p8 = self.to8(x)
        p16 = self.to16(p8)
        p32 = self.to32(p16)
        return [head(p) for head, p in zip(self.heads, (p8, p16, p32), strict=True)]


def _decode(raw):
    """raw maps -> boxes [B, N, 4] x1 y1 x2 y2 in pixels and class probabilities [B, N, nc]."""
    loss = DetectionLoss(NC)
    box_logits, cls_logits, shapes = loss.split(raw)
    points, strides = make_anchors(shapes, STRIDES)
    return dist_to_xyxy(dfl_expectation(box_logits), points) * strides, cls_logits.sigmoid()


def _shape_batch():
    """Two 64 x 64 images: grey noise with flat coloured rectangles, one class per colour."""
    generator = torch.Generator().manual_seed(0)
    images = 0.4 + 0.1 * torch.rand(2, 3, 64, 64, generator=generator)
    colours = {0: (0.9, 0.1, 0.1), 1: (0.1, 0.8, 0.1), 2: (0.1, 0.2, 0.9)}
    gt = [
        (0, 0, 8, 6, 36, 30),
        (0, 1, 38, 30, 60, 58),
        (1, 2, 12, 18, 52, 46),
    ]  # image, class, x1 y1 x2 y2 px
    rows = []
    for image, cls, x1, y1, x2, y2 in gt:
        images[image, :, y1:y2, x1:x2] = torch.tensor(colours[cls]).view(3, 1, 1)
        rows.append([image, cls, (x1 + x2) / 128, (y1 + y2) / 128, (x2 - x1) / 64, (y2 - y1) / 64])
    return images, torch.tensor(rows), gt


@pytest.mark.slow
def test_a_tiny_detector_overfits_one_batch_through_the_loss():
    torch.manual_seed(0)
    model = TinyDetector(NC)
    images, targets, gt = _shape_batch()
    loss = DetectionLoss(NC)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        total, items = loss(model(images), targets)
        total.backward()
        optimizer.step()
        first = float(total.detach()) if first is None else first
    with torch.no_grad():
        final, items = loss(model(images), targets)
        boxes, probs = _decode(model(images))
    assert float(final) < 0.25 * first, (first, float(final), items)
    for image, cls, *box in gt:
        top = int(probs[image, :, cls].argmax())  # the most confident anchor of the box's class
        iou = float(box_iou(boxes[image, top], torch.tensor(box, dtype=torch.float32)))
        assert iou > 0.7, (image, cls, boxes[image, top].tolist(), box, iou)
