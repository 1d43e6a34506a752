"""A detector's metrics on a labelled loader: its predictions after NMS, scored with COCO mAP
(optkit.measure.detect_map), and its val losses when the model can give its raw head maps.

What a detector returns is read by `detector_output`: optkit's and Ultralytics' [B, 4 + nc, N] (also
inside a tuple or dict, as Ultralytics 8.4 returns `(y, {...})` in eval mode), and YOLOv5's
[B, N, 5 + nc] with an objectness column (class scores = objectness x class probability).

A model whose graph already ends in NMS (`optkit export --nms`: [B, max_det, 6] rows x1, y1, x2, y2, score,
class; score 0 = padding) is handed in as `FinalDetections`; its rows are scored as they are (no NMS of
ours), those with a score > conf, at most max_det per image. Such a file's own NMS was fixed at export
(conf, IoU, best class per box), so its mAP is that of its settings, lower than at val's conf 0.001.
"""

from __future__ import annotations

import math
import time

VAL_CONF = 0.001  # score threshold of validation: low, so the PR curve reaches high recall
VAL_IOU = 0.7  # NMS IoU threshold
MAX_DET = 300  # detections kept per image


class FinalDetections:
    """A detector whose graph ends in NMS (an --nms ONNX file run by optkit.onnxrt.OrtModel): calling it
    gives [B, max_det, 6]; `nms` the settings fixed in the file (optkit.stages.onnx_nms.NmsConfig)."""

    training = False

    def __init__(self, model, nms, num_classes: int) -> None:
        self.model, self.nms, self.num_classes = model, nms, num_classes

    def __call__(self, x):
        return self.model(x)

    def detections(self, x) -> list:
        """Per image, float32 [n, 6] rows (x1, y1, x2, y2, score, class), the padding dropped."""
        y = self.model(x).float()
        return [rows[rows[:, 4] > 0] for rows in y]

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def __getattr__(self, name: str):  # the OrtModel's facts (path, fixed_batch, session, ...)
        if name == "model":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)


def with_graph_nms(model, meta: dict):
    """`model` (an optkit.onnxrt.OrtModel) as FinalDetections when its file's metadata (`meta`) records NMS
    in its graph (optkit.stages.onnx_nms), else `model` itself."""
    from optkit.stages.onnx_nms import nms_settings

    nms = nms_settings(meta)
    return model if nms is None else FinalDetections(model, nms, len(meta["names"]))


def final_detections(model) -> FinalDetections | None:
    """The FinalDetections inside `model` (itself, or wrapped by measure.validate.OutputsOf), or None."""
    for candidate in (model, getattr(model, "model", None)):
        if isinstance(candidate, FinalDetections):
            return candidate
    return None


def evaluate_detector(
    model, loader, device, amp: bool = False, loss_names=(), conf: float = VAL_CONF, iou: float = VAL_IOU,
    max_det: int = MAX_DET, details: bool = False,
) -> dict:  # fmt: skip
    """P, R, mAP50, mAP50-95 of `model` on `loader` (batches from optkit.data.detect_dataset), its val
    losses (`loss_names`, and their sum "loss"; None when the model gives no raw maps: ONNX, foreign),
    "images", "per_class" (a list of plain dicts) and "nms_seconds" (the share NMS took).

    `details`: also return "details", what a run's pictures draw (Detect.pictures): "first_batch" =
    (images, targets, predictions) of the first batch on the CPU, "pr_curve" (detect_map.PRCurve) and
    "ap50" (per class, None without ground truth)."""
    import torch

    from optkit.measure.detect_map import evaluate_detections
    from optkit.measure.nms import non_max_suppression

    raw_model = _raw_capable(model)
    final = final_detections(model)
    loss_fn = _val_loss(raw_model) if raw_model is not None else None
    was_training = model.training
    model.eval()
    predictions, truths, first = [], [], None
    loss_sum, images_seen, nms_seconds, num_classes = None, 0, 0.0, None
    with torch.inference_mode(), torch.autocast("cuda", enabled=amp and device.type == "cuda"):
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if raw_model is not None:
                raw = raw_model.forward_raw(images)
                y = _head(raw_model).decode(raw)
                _, items = loss_fn([r.float() for r in raw], targets.to(device))
                batch_loss = items.detach().double().cpu() * len(images)
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            elif final is None:
                y = model(images)
            if final is not None:  # NMS in the graph: its rows, thresholded further by conf, max_det
                dets = [d[d[:, 4] > conf][:max_det] for d in final.detections(images)]
                num_classes = final.num_classes
            else:
                y = y.float()
                num_classes = y.shape[1] - 4
                t0 = time.perf_counter()
                dets = non_max_suppression(y, conf=conf, iou=iou, max_det=max_det, multi_label=True)
                nms_seconds += time.perf_counter() - t0
            truth = truth_boxes(targets, len(images), images.shape[-1], images.shape[-2])
            predictions += [d.cpu().numpy() for d in dets]
            truths += truth
            if details and first is None:
                first = (images.cpu(), targets.cpu(), [d.cpu() for d in dets])
            images_seen += len(images)
    model.train(was_training)
    if images_seen == 0:
        from optkit.errors import DatasetError

        raise DatasetError("the validation split has no images")
    scores = evaluate_detections(predictions, truths, num_classes)
    result = {**scores.as_dict(), **_losses(loss_sum, images_seen, loss_names)}
    result.update(images=images_seen, per_class=_per_class(scores), nms_seconds=nms_seconds)
    if details:
        ap50 = [row.map50 for row in scores.per_class]
        result["details"] = {"first_batch": first, "pr_curve": scores.pr_curve, "ap50": ap50}
    return result


def truth_boxes(targets, batch: int, width: int, height: int) -> list:
    """Ground truth per image, numpy [m, 5] rows (class, x1, y1, x2, y2) in input pixels, from a batch's
    normalised (batch index, class, cx, cy, w, h) rows."""
    import numpy as np

    t = targets.detach().cpu().double().numpy()
    scale = np.array([width, height, width, height], dtype=np.float64)
    out = []
    for i in range(batch):
        rows = t[t[:, 0] == i]
        cx, cy, w, h = (rows[:, 2:6] * scale).T
        boxes = np.stack([rows[:, 1], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        out.append(boxes.reshape(-1, 5))
    return out


def detector_output(output, num_classes: int):
    """The [B, 4 + nc, N] tensor in what a detector returns (see the module docstring)."""
    import torch

    from optkit.errors import ConfigError

    found = _find_output(output, num_classes)
    if found is None:
        raise ConfigError(
            f"the model's output {_describe(output)} holds no detections for {num_classes} classes "
            f"([B, {4 + num_classes}, N] or YOLOv5's [B, N, {5 + num_classes}])"
        )
    if found.shape[1] == 4 + num_classes:
        return found
    if found.shape[2] == 4 + num_classes:
        return found.transpose(1, 2)
    boxes, objectness, classes = found[..., :4], found[..., 4:5], found[..., 5:]  # YOLOv5
    return torch.cat((boxes, objectness * classes), dim=2).transpose(1, 2)


def _find_output(output, num_classes: int):
    import torch

    if isinstance(output, torch.Tensor):
        ok = output.ndim == 3 and (
            output.shape[1] == 4 + num_classes or output.shape[2] in (4 + num_classes, 5 + num_classes)
        )
        return output if ok else None
    items = (
        output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) else ()
    )
    for item in items:
        found = _find_output(item, num_classes)
        if found is not None:
            return found
    return None


def _describe(output) -> str:
    import torch

    if isinstance(output, torch.Tensor):
        return str(list(output.shape))
    if isinstance(output, (list, tuple)):
        return "(" + ", ".join(_describe(o) for o in output) + ")"
    if isinstance(output, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in output.items()) + "}"
    return type(output).__name__


def _raw_capable(model):
    """The zoo detector inside `model` (itself, or wrapped by measure.validate.OutputsOf) when it can
    return its raw head maps (`forward_raw`), else None."""
    for candidate in (model, getattr(model, "model", None)):
        if candidate is not None and callable(getattr(candidate, "forward_raw", None)):
            return candidate
    return None


def _head(model):
    from optkit.models.parts import head_name

    return dict(model.named_modules())[head_name(model)]


def _val_loss(model):
    """The loss with the default gains (val losses are comparable across runs whatever their gains)."""
    from optkit.tasks.detect_loss import DetectionLoss

    head = _head(model)
    return DetectionLoss(head.nc, strides=tuple(head.strides), reg_max=head.reg_max)


def _losses(loss_sum, images: int, loss_names) -> dict:
    if loss_sum is None:
        return {"loss": None, **{name: None for name in loss_names}}
    means = (loss_sum / images).tolist()
    total = sum(means)
    return {"loss": total if math.isfinite(total) else None, **dict(zip(loss_names, means, strict=True))}


def _per_class(scores) -> list[dict]:
    """optkit.measure.detect_map's class rows as plain dicts (index, images, instances, P, R, mAP50,
    mAP50-95; None where the class has no ground truth)."""
    return [dict(vars(row)) for row in scores.per_class]
