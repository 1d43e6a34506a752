"""optkit.measure.detect_map: faster-coco-eval gives pycocotools' figures, hand-computed AP and P/R cases,
perfect and empty inputs, and refusals.

The one defined difference between the two evaluators: pycocotools computes precision as
tp / (tp + fp + eps) with eps = np.spacing(1) = 2.2e-16 (cocoeval.py, accumulate), faster-coco-eval as
tp / (tp + fp). A precision of 1 therefore reads 1 - 2.2e-16 in pycocotools and exactly 1 here; every
entry differs by < 1e-15, which is why the comparisons below allow 1e-12 (arrays) and 1e-9 (figures).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from optkit.errors import ConfigError, DatasetError, ModelError
from optkit.measure.detect_map import coco_precision, evaluate_detections, match_image


def random_case(
    rng, images=12, nc=4, per_image=6, false_positives=6, tie_scores=False, without=None, backgrounds=0.25
):
    """(predictions, ground truth): noisy copies of most ground-truth boxes (some of the wrong class) plus
    random false positives. Class nc - 1 never has ground truth (but gets predictions); a fraction
    `backgrounds` of the images has no ground truth; `without`: a class given no predictions."""
    preds, truths = [], []
    for _ in range(images):
        m = 0 if rng.random() < backgrounds else int(rng.integers(1, per_image + 1))
        xy, wh = rng.uniform(0, 200, (m, 2)), rng.uniform(4, 80, (m, 2))
        truth = np.column_stack([rng.integers(0, nc - 1, m), xy, xy + wh])
        rows = []
        for c, x1, y1, x2, y2 in truth:
            if rng.random() < 0.8:
                w, h = x2 - x1, y2 - y1
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]  # IoU mostly 0.6 .. 0.95
                label = c if rng.random() < 0.9 else rng.integers(0, nc)
                rows.append(
                    [x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3], rng.random(), label]
                )
        k = int(rng.integers(0, false_positives + 1))
        fxy, fwh = rng.uniform(0, 200, (k, 2)), rng.uniform(4, 80, (k, 2))
        rows += [[*a, *(a + b), rng.random(), rng.integers(0, nc)] for a, b in zip(fxy, fwh, strict=True)]
        pred = np.array(rows, dtype=np.float64).reshape(-1, 6)
        if tie_scores:
            pred[:, 4] = np.round(pred[:, 4] * 4) / 4 + 0.01  # five distinct scores
        if without is not None:
            pred = pred[pred[:, 5] != without]
        rng.shuffle(pred)
        preds.append(pred)
        truths.append(truth)
    return preds, truths


SCENARIOS = {
    "plain": {},
    "tied scores": {"tie_scores": True},
    "class 1 never predicted": {"without": 1},
    # > 100 predictions of one class in one image: COCO keeps the 100 best
    "crowded": {"images": 2, "per_image": 120, "false_positives": 400, "backgrounds": 0},
    "crowded, tied": {
        "images": 2,
        "per_image": 120,
        "false_positives": 400,
        "backgrounds": 0,
        "tie_scores": True,
    },
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_faster_coco_eval_equals_pycocotools(scenario):
    rng = np.random.default_rng(sorted(SCENARIOS).index(scenario))
    for _ in range(2 if "crowded" in scenario else 4):
        preds, truths = random_case(rng, **SCENARIOS[scenario])
        fast = evaluate_detections(preds, truths, 4)
        ref = evaluate_detections(preds, truths, 4, backend="pycocotools")
        assert fast.measured_classes == ref.measured_classes == 3
        assert 0.01 < fast.map < fast.map50 < 0.99  # a figure that can tell right from wrong
        assert fast.map == pytest.approx(ref.map, abs=1e-9)
        assert fast.map50 == pytest.approx(ref.map50, abs=1e-9)
        # every measured class has all 10 x 101 entries, so COCO's overall mean is the mean of per-class APs
        measured = [c for c in fast.per_class if c.instances]
        assert fast.map50 == pytest.approx(np.mean([c.map50 for c in measured]), abs=1e-12)
        assert fast.map == pytest.approx(np.mean([c.map for c in measured]), abs=1e-12)
        for f, r in zip(fast.per_class, ref.per_class, strict=True):
            assert (f.map is None) == (r.map is None) == (f.instances == 0)
            if f.map is not None:
                assert f.map == pytest.approx(r.map, abs=1e-9) and f.map50 == pytest.approx(r.map50, abs=1e-9)
        np.testing.assert_allclose(fast.pr_curve.precision, ref.pr_curve.precision, atol=1e-12)
        p = [np.asarray(x, dtype=np.float64) for x in preds]
        t = [np.asarray(x, dtype=np.float64) for x in truths]
        np.testing.assert_allclose(
            coco_precision(p, t, 4), coco_precision(p, t, 4, "pycocotools"), atol=1e-12
        )


def test_crowded_case_really_cuts_at_100():
    preds, _ = random_case(np.random.default_rng(sorted(SCENARIOS).index("crowded")), **SCENARIOS["crowded"])
    assert max(np.bincount(p[:, 5].astype(int)).max() for p in preds) > 100


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(5)
    _, truths = random_case(rng, images=10)
    preds = [np.column_stack([t[:, 1:5], rng.uniform(0.5, 1, len(t)), t[:, 0]]) for t in truths]
    for backend in ("faster", "pycocotools"):
        m = evaluate_detections(preds, truths, 4, backend=backend)
        for value in (m.map, m.map50, m.precision, m.recall):
            assert value == pytest.approx(1.0, abs=1e-12)
        assert all(c.map == pytest.approx(1.0, abs=1e-12) for c in m.per_class if c.instances)
        np.testing.assert_allclose(m.pr_curve.mean, 1.0, atol=1e-12)


def _hand_case():
    """One image, two boxes of class 0. Predictions: 0.9 exact (IoU 1), 0.8 elsewhere (IoU 0), 0.7 on the
    second box with IoU 0.525 (52.5 / 100), which matches at the IoU threshold 0.50 only."""
    truth = [np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10]], dtype=np.float64)]
    pred = [np.array([[0, 0, 10, 10, 0.9, 0], [50, 0, 60, 10, 0.8, 0], [20, 0, 30, 5.25, 0.7, 0]])]
    return pred, truth


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_hand_computed_ap(backend):
    pred, truth = _hand_case()
    m = evaluate_detections(pred, truth, 2, backend=backend)
    # precision after each prediction 1, 1/2, 2/3 at recall 1/2, 1/2, 1; COCO's envelope makes it 1 up to
    # recall 0.5 (51 of the 101 points) and 2/3 beyond (50 points)
    ap_matched = (51 * 1 + 50 * 2 / 3) / 101
    ap_unmatched = 51 / 101  # the third prediction is wrong: recall stops at 0.5
    assert m.map50 == pytest.approx(ap_matched, abs=1e-12)
    assert m.map == pytest.approx((ap_matched + 9 * ap_unmatched) / 10, abs=1e-12)
    assert m.per_class[0].map50 == pytest.approx(ap_matched, abs=1e-12)
    assert m.per_class[0].map == pytest.approx(m.map, abs=1e-12)
    expected_curve = [1.0] * 51 + [2 / 3] * 50
    np.testing.assert_allclose(m.pr_curve.precision[0], expected_curve, atol=1e-12)
    assert np.isnan(m.pr_curve.precision[1]).all()  # class 1 has no ground truth
    np.testing.assert_allclose(m.pr_curve.mean, expected_curve, atol=1e-12)
    assert m.measured_classes == 1 and m.images == 1 and m.instances == 2
    # best F1: 0.8 (P 2/3, R 1) for confidences <= 0.7, the highest of them on the grid k / 999
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0
    assert m.best_conf == pytest.approx(699 / 999)


def test_precision_recall_at_best_f1_two_classes():
    """Class 0: two boxes; predictions 0.9 and 0.6 right, 0.4 wrong. Class 1: one box; 0.8 wrong, 0.5 right.
    Class 2 has no ground truth (a prediction of it stays out of the means). Mean F1 by confidence t:
    t <= 0.4: (0.8 + 2/3) / 2; 0.4 < t <= 0.5: (1 + 2/3) / 2 (the best); 0.5 < t <= 0.6: 1/2; above: less."""
    truth = [
        np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [1, 40, 40, 60, 60]], dtype=np.float64),
        np.zeros((0, 5)),  # a background image with a false positive below every threshold that matters
    ]
    pred = [
        np.array(
            [
                [0, 0, 10, 10, 0.9, 0],
                [20, 0, 30, 10, 0.6, 0],
                [100, 100, 110, 110, 0.4, 0],
                [41, 40, 60, 60, 0.5, 1],  # IoU 0.95
                [0, 0, 10, 10, 0.8, 1],  # right place, wrong class
                [70, 70, 80, 80, 0.95, 2],
            ]
        ),
        np.array([[0, 0, 5, 5, 0.3, 0]]),
    ]
    m = evaluate_detections(pred, truth, 3)
    assert m.best_conf == pytest.approx(499 / 999)  # the highest grid point <= 0.5
    assert m.precision == pytest.approx((1 + 0.5) / 2) and m.recall == pytest.approx(1.0)
    rows = {c.index: c for c in m.per_class}
    assert (rows[0].precision, rows[0].recall) == (1.0, 1.0)
    assert (rows[1].precision, rows[1].recall) == (0.5, 1.0)
    assert rows[2].precision is None and rows[2].map is None and rows[2].instances == 0
    assert (rows[0].images, rows[0].instances, rows[1].images, rows[1].instances) == (1, 2, 1, 1)
    assert m.images == 2 and m.instances == 3 and m.measured_classes == 2


def test_matching_is_greedy_by_score_and_class():
    truth = np.array([[0, 0, 0, 10, 10], [0, 3, 0, 13, 10], [1, 50, 50, 60, 60]], dtype=np.float64)
    pred = np.array(
        [
            [0, 0, 10, 10, 0.5, 0],  # box 0 taken; IoU 0.54 with box 1 -> right
            [1, 0, 11, 10, 0.9, 0],  # best score: IoU 0.82 with box 0, 0.67 with box 1 -> takes box 0
            [0, 0, 10, 10, 0.4, 0],  # both boxes taken -> wrong
            [50, 50, 60, 60, 0.8, 0],  # exact box of class 1, but predicted as class 0 -> wrong
        ]
    )
    assert match_image(pred, truth).tolist() == [True, True, False, False]
    assert match_image(pred[:0], truth).shape == (0,)
    assert not match_image(pred, truth[:0]).any()


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_empty_cases(backend):
    preds, truths = random_case(np.random.default_rng(9))
    no_truth = evaluate_detections(preds, [np.zeros((0, 5))] * len(preds), 4, backend=backend)
    assert not no_truth.measured and no_truth.measured_classes == 0
    assert no_truth.as_dict() == {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map": 0.0}
    assert all(c.instances == 0 and c.map is None for c in no_truth.per_class)
    assert not evaluate_detections([], [], 4, backend=backend).measured

    nothing = evaluate_detections([np.zeros((0, 6))] * len(truths), truths, 4, backend=backend)
    assert nothing.measured and nothing.as_dict() == {
        "precision": 0.0,
        "recall": 0.0,
        "map50": 0.0,
        "map": 0.0,
    }
    assert [c.map for c in nothing.per_class] == [0.0, 0.0, 0.0, None]
    assert (nothing.pr_curve.mean == 0).all()
    assert all(isinstance(v, float) and math.isfinite(v) for v in nothing.as_dict().values())


def test_prints_nothing(capfd):
    preds, truths = random_case(np.random.default_rng(11))
    evaluate_detections(preds, truths, 4)
    evaluate_detections(preds, truths, 4, backend="pycocotools")
    assert capfd.readouterr() == ("", "")


def test_refusals():
    truth = [np.array([[0, 0, 0, 10, 10]], dtype=np.float64)]
    good = [np.array([[0, 0, 10, 10, 0.9, 0]])]
    with pytest.raises(ModelError, match="class 3; the data has 2 classes"):
        evaluate_detections([np.array([[0, 0, 10, 10, 0.9, 3]])], truth, 2)
    with pytest.raises(ModelError, match="not finite"):
        evaluate_detections([np.array([[0, 0, np.nan, 10, 0.9, 0]])], truth, 2)
    with pytest.raises(DatasetError, match="class 2; the data has 2 classes"):
        evaluate_detections(good, [np.array([[2, 0, 0, 10, 10]])], 2)
    with pytest.raises(DatasetError, match="1 images of predictions but 2"):
        evaluate_detections(good, truth * 2, 2)
    with pytest.raises(ConfigError, match="backend"):
        evaluate_detections(good, truth, 2, backend="ultralytics")
