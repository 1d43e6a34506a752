"""optkit.measure.nms against a brute-force pure-Python greedy NMS (the textbook algorithm), on random
clustered boxes with ties, both label modes, class-agnostic or not, a max_det cut, a class filter and
small blocks (so that the block-wise resolution crosses block boundaries).

Box coordinates lie on a 0.5 px grid and sizes are whole pixels, so corners are exact in float32 and an
IoU is a ratio of small multiples of 1/4: float32 and Python's float then agree on every `IoU > iou`
(the nearest such ratio to a threshold is > 1e-6 away, float32 rounding is 6e-8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optkit.errors import ModelError
from optkit.measure import nms
from optkit.measure.nms import box_iou, non_max_suppression, xywh_to_xyxy


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_nms(pred, conf, iou, max_det, multi_label, agnostic, classes, max_candidates) -> list[list]:
    """The textbook algorithm, one candidate at a time, in Python floats."""
    conf32 = float(np.float32(conf))  # torch compares a float32 tensor with the float32 of the threshold
    out = []
    for image in pred.tolist():
        nc = len(image) - 4
        candidates = []  # (score, box, class) in anchor, then class, order
        for a in range(len(image[0])):
            cx, cy, w, h = (image[k][a] for k in range(4))
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            probs = [image[4 + c][a] for c in range(nc)]
            if multi_label:
                pairs = [(p, c) for c, p in enumerate(probs) if p > conf32]
            else:
                best = max(range(nc), key=lambda c: (probs[c], -c))  # first of equal maxima
                pairs = [(probs[best], best)] if probs[best] > conf32 else []
            candidates += [(p, box, c) for p, c in pairs if classes is None or c in classes]
        candidates = sorted(candidates, key=lambda t: -t[0])[:max_candidates]  # stable
        kept = []
        for score, box, c in candidates:
            if len(kept) == max_det:
                break
            if all(_iou(box, k[:4]) <= iou for k in kept if agnostic or k[5] == c):
                kept.append([*box, score, float(c)])
        out.append(kept)
    return out


def random_pred(rng, batch=2, anchors=120, nc=3, clusters=6, tie_scores=False):
    """[batch, 4 + nc, anchors] float32: boxes jittered around a few centres, scores with ties if asked."""
    centres = rng.integers(20, 200, size=(batch, clusters, 2))
    pick = rng.integers(0, clusters, size=(batch, anchors))
    centre = np.take_along_axis(centres, pick[..., None], axis=1)
    xy = centre + rng.integers(-16, 17, size=(batch, anchors, 2)) * 0.5
    wh = rng.integers(4, 60, size=(batch, anchors, 2)).astype(np.float64)
    if tie_scores:
        probs = rng.integers(0, 8, size=(batch, anchors, nc)) / 8.0  # many equal scores, some zero
    else:
        probs = rng.random((batch, anchors, nc)) ** 2
    boxes = np.concatenate((xy, wh, probs), axis=2).astype(np.float32)
    return torch.from_numpy(boxes).transpose(1, 2).contiguous()


def _check(pred, **kw):
    got = non_max_suppression(pred, **kw)
    want = reference_nms(
        pred,
        kw.get("conf", 0.001),
        kw.get("iou", 0.7),
        kw.get("max_det", 300),
        kw.get("multi_label", False),
        kw.get("agnostic", False),
        kw.get("classes"),
        kw.get("max_candidates", 30000),
    )
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == (len(w), 6)
        assert torch.equal(g, torch.tensor(w, dtype=torch.float32).reshape(-1, 6))
    return got


@pytest.mark.parametrize("block", [512, 7])
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("agnostic", [False, True])
def test_equals_reference_on_random_cases(monkeypatch, block, multi_label, agnostic):
    monkeypatch.setattr(nms, "_BLOCK", block)
    rng = np.random.default_rng(1000 * block + 10 * multi_label + agnostic)
    for case in range(12):
        pred = random_pred(rng, tie_scores=case % 3 == 0)
        iou = (0.3, 0.45, 0.5, 0.7)[case % 4]
        conf = (0.001, 0.25, 0.5)[case % 3]
        _check(pred, conf=conf, iou=iou, multi_label=multi_label, agnostic=agnostic)


@pytest.mark.parametrize("block", [512, 5])
def test_max_det_classes_and_candidate_cut(monkeypatch, block):
    monkeypatch.setattr(nms, "_BLOCK", block)
    rng = np.random.default_rng(7 + block)
    for case in range(8):
        pred = random_pred(rng, anchors=90, nc=4, tie_scores=case % 2 == 1)
        multi = case % 2 == 0
        assert all(len(d) == 9 for d in _check(pred, max_det=9, iou=0.5, multi_label=multi, conf=0.0))
        _check(pred, max_det=1, multi_label=multi)
        _check(pred, classes=[1, 3], iou=0.45, multi_label=multi)
        _check(pred, max_candidates=25, iou=0.6, multi_label=multi)


def test_suppression_chain_needs_many_rounds():
    """Boxes shifted 1 px at a time: each overlaps its neighbours, greedy keeps every k-th one; the
    block's fixed point needs many rounds to reach that."""
    n = 60
    x = torch.arange(n, dtype=torch.float32) + 50
    pred = torch.zeros(1, 5, n)
    pred[0, 0], pred[0, 1], pred[0, 2], pred[0, 3] = x, 50.0, 10.0, 10.0
    pred[0, 4] = torch.linspace(0.9, 0.3, n)
    kept = _check(pred, iou=0.6)[0]
    assert 5 < len(kept) < n  # some kept, most suppressed


def test_empty_inputs():
    assert non_max_suppression(torch.zeros(0, 7, 10)) == []
    for out in non_max_suppression(torch.zeros(2, 7, 0)) + non_max_suppression(torch.zeros(2, 7, 10)):
        assert out.shape == (0, 6) and out.dtype == torch.float32
    low = random_pred(np.random.default_rng(0))
    low[:, 4:] *= 0.1  # every score <= 0.1
    assert all(len(d) == 0 for d in non_max_suppression(low, conf=0.1, multi_label=True))


def test_classes_never_suppress_each_other():
    """The same box in every class: per class all kept; class-agnostic only the best."""
    nc = 80
    pred = torch.zeros(1, 4 + nc, 1)
    pred[0, :4, 0] = torch.tensor([3000.0, 3000.0, 6000.0, 6000.0])  # large boxes far from the origin
    pred[0, 4:, 0] = torch.linspace(0.9, 0.1, nc)
    per_class = non_max_suppression(pred, multi_label=True)[0]
    assert per_class.shape == (nc, 6)
    assert torch.equal(per_class[:, 5], torch.arange(nc, dtype=torch.float32))
    assert torch.equal(per_class[:, :4], xywh_to_xyxy(pred[0, :4, 0]).expand(nc, 4))
    agnostic = non_max_suppression(pred, multi_label=True, agnostic=True)[0]
    assert agnostic.shape == (1, 6) and agnostic[0, 5] == 0


def test_kept_boxes_do_not_overlap_within_a_class():
    rng = np.random.default_rng(3)
    pred = random_pred(rng, batch=1, anchors=3000, nc=5, clusters=40)
    for multi, agnostic in ((False, False), (True, False), (True, True)):
        out = non_max_suppression(pred, iou=0.5, multi_label=multi, agnostic=agnostic)[0]
        assert len(out) == 300  # the default max_det is reached on 3,000 clustered anchors
        assert torch.all(out[:-1, 4] >= out[1:, 4])  # score descending
        same = (
            torch.ones(len(out), len(out), dtype=torch.bool)
            if agnostic
            else out[:, None, 5] == out[None, :, 5]
        )
        ious = box_iou(out[:, :4], out[:, :4]).fill_diagonal_(0)
        assert ious[same].max() <= 0.5


def test_box_iou_and_xywh():
    boxes = xywh_to_xyxy(
        torch.tensor([[5.0, 5.0, 10.0, 10.0], [10.0, 5.0, 10.0, 10.0], [50.0, 50.0, 0.0, 0.0]])
    )
    assert torch.equal(boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    ious = box_iou(boxes, boxes)
    expected = torch.tensor([[1.0, 50 / 150, 0.0], [50 / 150, 1.0, 0.0], [0.0, 0.0, 0.0]])  # degenerate: 0
    assert torch.allclose(ious, expected)


def test_bad_shape_is_a_model_error():
    with pytest.raises(ModelError, match=r"\[batch, 4 \+ classes, anchors\]"):
        non_max_suppression(torch.zeros(2, 4, 10))
