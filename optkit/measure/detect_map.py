"""COCO mAP of a detector's boxes: mAP50 and mAP50-95 (101-point interpolation, at most 100 detections per
image and class, area "all"), overall and per class, with precision and recall at the best-F1 confidence.

The AP figures come from COCO's evaluator as pycocotools defines it, computed by `faster-coco-eval` (the
same algorithm in C++; `backend="pycocotools"` runs the reference itself, which the tests compare). Both
read the precision array `[IoU threshold, recall point, class]`: a class's AP is the mean of its slice, the
overall figure the mean over every class that has ground truth (COCO leaves the others out: their AP is
undefined, reported here as None).

Precision and recall are not COCO figures: predictions are matched to ground truth per image and class at
IoU >= 0.5 (highest score first, each to the unmatched box of highest IoU, as COCO matches), P and R of each
class are read at 1000 confidences in [0, 1], and the confidence that maximises the mean F1 over classes
with ground truth is the one reported (the highest such confidence, when several tie).

Boxes are (x1, y1, x2, y2) in one pixel space for both sides; predictions are rows (x1, y1, x2, y2, score,
class) per image (optkit.measure.nms), ground truth rows (class, x1, y1, x2, y2).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

MATCH_IOU = 0.5  # IoU at which precision and recall count a prediction as correct
CONF_POINTS = 1000  # confidences in [0, 1] at which P, R and F1 are read
RECALL_POINTS = 101  # COCO's recall points 0, 0.01, ..., 1
IOU_THRESHOLDS = 10  # COCO's IoU thresholds 0.50, 0.55, ..., 0.95
MAX_DETS = 100  # COCO's detections per image (and class) for AP
BACKENDS = ("faster", "pycocotools")


@dataclass
class ClassMetrics:
    """One class. `precision`, `recall`, `map50`, `map` are None when the class has no ground truth."""

    index: int  # class id
    images: int  # images with at least one ground-truth box of this class
    instances: int  # ground-truth boxes of this class
    precision: float | None  # at the best-F1 confidence (DetectionMetrics.best_conf)
    recall: float | None
    map50: float | None  # AP at IoU 0.5
    map: float | None  # AP averaged over IoU 0.50:0.05:0.95


@dataclass
class PRCurve:
    """COCO's interpolated precision at IoU 0.5 (what PR_curve.png draws)."""

    recall: np.ndarray  # [101] recall points 0 .. 1
    precision: np.ndarray  # [K, 101] per class; NaN rows for classes without ground truth
    mean: np.ndarray  # [101] mean over classes with ground truth (zeros when there are none)


@dataclass
class DetectionMetrics:
    map50: float  # fraction in [0, 1]
    map: float  # mAP50-95, fraction in [0, 1]
    precision: float  # mean over classes with ground truth, at best_conf
    recall: float
    best_conf: float  # the confidence in [0, 1] maximising the mean F1
    per_class: list[ClassMetrics]  # one per class id 0 .. num_classes - 1
    pr_curve: PRCurve
    images: int
    instances: int  # ground-truth boxes, all classes
    measured_classes: int  # classes with ground truth; 0: nothing was measured, every figure is 0

    @property
    def measured(self) -> bool:
        return self.measured_classes > 0

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "map50": self.map50, "map": self.map}


def evaluate_detections(
    predictions, ground_truth, num_classes: int, backend: str = "faster"
) -> DetectionMetrics:
    """Score `predictions` (per image, [n, 6] rows x1, y1, x2, y2, score, class) against `ground_truth`
    (per image, [m, 5] rows class, x1, y1, x2, y2); see the module docstring."""
    from optkit.errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"mAP backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes!r}")
    num_classes = int(num_classes)
    preds, truths = _checked(predictions, ground_truth, num_classes)
    instances = np.zeros(num_classes, dtype=np.int64)
    images_with = np.zeros(num_classes, dtype=np.int64)
    for truth in truths:
        classes = truth[:, 0].astype(np.int64)
        instances += np.bincount(classes, minlength=num_classes)
        images_with[np.unique(classes)] += 1
    measured = instances > 0
    has_predictions = any(len(p) for p in preds)
    if measured.any() and has_predictions:
        precision = coco_precision(preds, truths, num_classes, backend)
    else:  # nothing to find, or nothing found: COCO's precision is 0 wherever it is defined
        precision = np.broadcast_to(
            np.where(measured, 0.0, -1.0), (IOU_THRESHOLDS, RECALL_POINTS, num_classes)
        )
    p, r, best_conf = best_f1_precision_recall(preds, truths, num_classes)
    return _metrics(precision, p, r, best_conf, measured, instances, images_with, len(truths))


def _checked(predictions, ground_truth, num_classes: int) -> tuple[list, list]:
    """float64 arrays [n, 6] and [m, 5], with class ids checked against `num_classes`."""
    from optkit.errors import DatasetError, ModelError

    if len(predictions) != len(ground_truth):
        raise DatasetError(
            f"{len(predictions)} images of predictions but {len(ground_truth)} of ground truth"
        )
    preds, truths = [], []
    for i, (pred, truth) in enumerate(zip(predictions, ground_truth, strict=True)):
        pred, truth = _rows(pred, 6), _rows(truth, 5)
        if pred is None or not np.isfinite(pred).all():
            raise ModelError(
                f"predictions of image {i} are not finite [n, 6] rows (x1, y1, x2, y2, score, class)"
            )
        if truth is None or not np.isfinite(truth).all():
            raise DatasetError(f"ground truth of image {i} is not finite [m, 5] rows (class, x1, y1, x2, y2)")
        bad = [c for c in np.unique(pred[:, 5]) if c != int(c) or not 0 <= c < num_classes]
        if bad:
            raise ModelError(
                f"image {i} has a prediction of class {bad[0]:g}; the data has {num_classes} classes"
            )
        bad = [c for c in np.unique(truth[:, 0]) if c != int(c) or not 0 <= c < num_classes]
        if bad:
            raise DatasetError(f"image {i} has a box of class {bad[0]:g}; the data has {num_classes} classes")
        preds.append(pred)
        truths.append(truth)
    return preds, truths


def _rows(array, columns: int):
    """`array` as float64 [n, columns] (an empty array of any shape: [0, columns]); None if not a table."""
    rows = np.asarray(array, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, columns))
    return rows if rows.ndim == 2 and rows.shape[1] == columns else None


# --- COCO AP -------------------------------------------------------------------------------------------


def coco_precision(preds: list, truths: list, num_classes: int, backend: str = "faster") -> np.ndarray:
    """COCO's precision array [10 IoU thresholds, 101 recall points, num_classes] at area "all" and 100
    detections; -1 where a class has no ground truth. Image i is COCO image i + 1, class c category c + 1
    (COCO reads an id of 0 as "unmatched")."""
    if backend == "faster":
        return _faster_precision(_coco_truth(truths, num_classes), _coco_detections(preds))
    return _pycocotools_precision(_coco_truth(truths, num_classes), _coco_detections(preds))


def _coco_truth(truths: list, num_classes: int) -> dict:
    annotations = []
    for image, truth in enumerate(truths):
        for c, x1, y1, x2, y2 in truth.tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {
        "images": [{"id": image + 1} for image in range(len(truths))],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
        "annotations": annotations,
    }


def _coco_detections(preds: list) -> list[dict]:
    """COCO result dicts (COCO's `loadRes` adds their ids and areas)."""
    results = []
    for image, pred in enumerate(preds):
        for x1, y1, x2, y2, score, c in pred.tolist():
            results.append(
                {
                    "image_id": image + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return results


def _faster_precision(truth: dict, detections: list) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    def quiet(*_):  # faster-coco-eval reports progress through this
        pass

    coco_truth = COCO(truth, print_function=quiet)
    evaluator = COCOeval_faster(coco_truth, coco_truth.loadRes(detections), "bbox", print_function=quiet)
    params = evaluator.params
    all_area = params.areaRngLbl.index("all")
    # only the settings read below: area "all", 100 detections (the others change nothing in that slice)
    params.areaRng, params.areaRngLbl, params.maxDets = [params.areaRng[all_area]], ["all"], [MAX_DETS]
    evaluator.evaluate()
    evaluator.accumulate()
    return np.asarray(evaluator.eval["precision"])[:, :, :, 0, 0]


def _pycocotools_precision(truth: dict, detections: list) -> np.ndarray:
    """The reference, with its default settings (all area ranges, 1/10/100 detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_truth = COCO()
        coco_truth.dataset = truth
        coco_truth.createIndex()
        evaluator = COCOeval(coco_truth, coco_truth.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    params = evaluator.params
    area, dets = params.areaRngLbl.index("all"), params.maxDets.index(MAX_DETS)
    return np.asarray(evaluator.eval["precision"])[:, :, :, area, dets]


# --- precision and recall at the best F1 ---------------------------------------------------------------


def best_f1_precision_recall(
    preds: list, truths: list, num_classes: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(precision [K], recall [K], confidence): per-class P and R at the confidence in
    linspace(0, 1, 1000) maximising the mean F1 over classes with ground truth (the highest such
    confidence; 0 when no prediction is correct). A class's P is 0 when it has no prediction at that
    confidence; its R is NaN when it has no ground truth."""
    grid = np.linspace(0.0, 1.0, CONF_POINTS)
    scores, correct, classes = _matched(preds, truths)
    instances = np.zeros(num_classes)
    for truth in truths:
        instances += np.bincount(truth[:, 0].astype(np.int64), minlength=num_classes)
    precision = np.zeros((num_classes, CONF_POINTS))
    recall = np.full((num_classes, CONF_POINTS), np.nan)
    for c in range(num_classes):
        chosen = classes == c
        precision[c], true_positives = _precision_at(scores[chosen], correct[chosen], grid)
        if instances[c] > 0:
            recall[c] = true_positives / instances[c]
    measured = instances > 0
    if not measured.any():
        return precision[:, 0], recall[:, 0], 0.0
    p, r = precision[measured], recall[measured]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0).mean(axis=0)
    best = int(np.flatnonzero(f1 == f1.max())[-1]) if f1.max() > 0 else 0
    return precision[:, best], recall[:, best], float(grid[best])


def _precision_at(scores: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision (0 where nothing is predicted) and true-positive count of one class's predictions with
    score >= each confidence of `grid`."""
    order = np.argsort(-scores, kind="stable")
    true_cum = np.concatenate(([0], np.cumsum(correct[order])))
    predicted = len(scores) - np.searchsorted(np.sort(scores), grid, side="left")  # count with score >= t
    true_positives = true_cum[predicted].astype(np.float64)
    return np.divide(true_positives, predicted, out=np.zeros(len(grid)), where=predicted > 0), true_positives


def _matched(preds: list, truths: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, correct, class) of every prediction of every image, correct = matched at MATCH_IOU."""
    scores, correct, classes = [], [], []
    for pred, truth in zip(preds, truths, strict=True):
        scores.append(pred[:, 4])
        correct.append(match_image(pred, truth))
        classes.append(pred[:, 5].astype(np.int64))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(correct), np.concatenate(classes)


def match_image(pred: np.ndarray, truth: np.ndarray, iou: float = MATCH_IOU) -> np.ndarray:
    """bool [n]: which predictions of one image match a ground-truth box of their class at IoU >= `iou`.
    Highest score first (stable), each to the still unmatched box of highest IoU; a box matches once."""
    correct = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(truth) == 0:
        return correct
    order = np.argsort(-pred[:, 4], kind="stable")
    ious = _box_iou(pred[order, :4], truth[:, 1:5])
    ious[pred[order, 5][:, None] != truth[None, :, 0]] = -1.0  # another class never matches
    taken = np.zeros(len(truth), dtype=bool)
    for row in np.flatnonzero((ious >= iou).any(axis=1)):  # only predictions that overlap something
        candidates = np.where(taken, -1.0, ious[row])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            taken[best] = True
            correct[order[row]] = True
    return correct


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N, M] of xyxy boxes (0 where the union has no area)."""
    wh = np.clip(
        np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None
    )
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# --- the result ----------------------------------------------------------------------------------------


def _metrics(precision, p, r, best_conf, measured, instances, images_with, images: int) -> DetectionMetrics:
    """DetectionMetrics from COCO's precision [10, 101, K] and per-class P, R at `best_conf`."""
    per_class = []
    for c in range(len(measured)):
        ap = precision[:, :, c]
        per_class.append(
            ClassMetrics(
                index=c,
                images=int(images_with[c]),
                instances=int(instances[c]),
                precision=float(p[c]) if measured[c] else None,
                recall=float(r[c]) if measured[c] else None,
                map50=float(ap[0].mean()) if measured[c] else None,
                map=float(ap.mean()) if measured[c] else None,
            )
        )
    at_50 = np.where(measured[:, None], precision[0].T, np.nan)  # [K, 101]
    curve = PRCurve(
        recall=np.linspace(0.0, 1.0, RECALL_POINTS),
        precision=at_50,
        mean=at_50[measured].mean(axis=0) if measured.any() else np.zeros(RECALL_POINTS),
    )
    return DetectionMetrics(
        map50=_mean_defined(precision[0]),
        map=_mean_defined(precision),
        precision=float(p[measured].mean()) if measured.any() else 0.0,
        recall=float(r[measured].mean()) if measured.any() else 0.0,
        best_conf=best_conf,
        per_class=per_class,
        pr_curve=curve,
        images=images,
        instances=int(instances.sum()),
        measured_classes=int(measured.sum()),
    )


def _mean_defined(precision: np.ndarray) -> float:
    """COCO's summary: the mean of every entry that is defined (> -1); 0 when none is."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0
