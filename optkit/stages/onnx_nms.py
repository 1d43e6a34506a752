"""Non-maximum suppression inside an exported detector's graph (`optkit export --nms`).

The raw graph returns [B, 4 + nc, N] (box centre x, centre y, width, height in input pixels, then one
probability per class). `append_nms` adds, with the `onnx` helper API, the nodes that turn it into the final
detections, one output `output0` [B, max_det, 6]: rows (x1, y1, x2, y2, score, class), highest score first.
An image with fewer than `max_det` detections gets rows of zeros after its own: **a row whose score is 0 is
padding** (a kept detection's score is > conf >= 0, so never 0).

The rule is optkit's own NMS (optkit.measure.nms.non_max_suppression, `multi_label=False`), which predict
uses: each box takes its best class (the first among equal maxima), candidates are the boxes whose score is
> conf, greedy NMS runs per class (boxes of different classes never suppress each other) with IoU > iou
suppressing, and the `max_det` highest scores over all classes are kept. In ONNX:

- ArgMax over the classes, and an Equal against the class ids, zero every score but each box's best;
- ONNX `NonMaxSuppression` (center_point_box 0, the boxes as corners computed as optkit computes them:
  centre -/+ size / 2) runs per image and per class through its class dimension, at most `max_det` per
  class: the greedy result per class, whose union's top `max_det` by score is optkit's capped result;
- GatherND reads each kept (image, class, box)'s corners and score; a [B, K] matrix holds each image's
  scores (-1 in the columns of other images' detections), `max_det` columns of -1 are appended, TopK
  takes `max_det` per image, and rows whose score is not > 0 are zeroed (padding).

optkit's NMS also caps the candidates at 30000 per image before suppression; the graph has no such cap
(8400 anchors at 640 px never reach it). Ties in score may come out in another order than optkit's.
Everything runs in float32 (an fp16 graph's output is cast first: ONNX Runtime's NonMaxSuppression takes
float32). The settings are fixed in the file and recorded in its metadata (`NMS_KEY`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from optkit.limits import MAX_DET, SCORE, FieldError

if TYPE_CHECKING:
    import onnx

NMS_TASKS = ("detect",)  # tasks whose exported output NMS reads ([B, 4 + nc, N])
NMS_KEY = "nms"  # metadata_props key: JSON {"conf", "iou", "max_det", "labels"}
RAW_SUFFIX = "_raw"  # the raw output tensor's new name: <output>_raw
LABELS = "best class per box"  # which (box, class) pairs are candidates (multi_label=False)
PADDING = "rows whose score is 0 are padding"
PREDICT_CONF = 0.25  # predict's default score threshold (optkit.workflows.predict)


@dataclass(frozen=True)
class NmsConfig:
    conf: float = PREDICT_CONF  # keep scores > conf
    iou: float = 0.7  # suppress a box whose IoU with a kept box of its class is > iou
    max_det: int = 300  # detections per image (rows of the output)

    def validate(self) -> NmsConfig:
        for name, value, bounds in (("conf", self.conf, SCORE), ("iou", self.iou, SCORE)):
            if value not in bounds:
                raise FieldError(name, bounds.refusal(value))
        if self.max_det not in MAX_DET:
            raise FieldError("max_det", MAX_DET.refusal(self.max_det))
        return self

    def metadata(self) -> dict:
        return {**asdict(self), "labels": LABELS}


def nms_settings(meta: dict[str, Any]) -> NmsConfig | None:
    """The NmsConfig an exported file's metadata records (optkit.onnxrt.read_metadata's dict), or None
    for a file without NMS in its graph."""
    value = meta.get(NMS_KEY)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        from optkit.errors import CheckpointError

        raise CheckpointError(f"the file's '{NMS_KEY}' metadata is not a JSON object: {meta.get(NMS_KEY)!r}")
    return NmsConfig(float(value["conf"]), float(value["iou"]), int(value["max_det"]))


def output_note(config: NmsConfig) -> str:
    """What an --nms graph's output holds (the `outputs` metadata and the export report)."""
    return (
        f"output0 [B, {config.max_det}, 6]: x1, y1, x2, y2 in input pixels, score, class; at most "
        f"{config.max_det} per image, highest score first, {PADDING}; NMS in the graph (score > "
        f"{config.conf:g}, IoU > {config.iou:g} suppresses, per class, {LABELS})"
    )


def append_nms(proto: onnx.ModelProto, config: NmsConfig) -> onnx.ModelProto:
    """A copy of `proto` (one output [B, 4 + nc, N]) whose output is the final detections (module
    docstring); the output keeps its name, the raw tensor is renamed `<name>_raw`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    if len(g.output) != 1:
        raise ValueError(f"NMS needs a graph with one output, this one has {len(g.output)}")
    out = g.output[0]
    dims = out.type.tensor_type.shape.dim
    channels = dims[1].dim_value if len(dims) == 3 else 0
    if channels < 5:
        raise ValueError(f"NMS reads [B, 4 + classes, anchors]; the graph's output has {len(dims)} dims")
    name, raw = out.name, out.name + RAW_SUFFIX
    for node in g.node:
        node.output[:] = [raw if o == name else o for o in node.output]
        node.input[:] = [raw if i == name else i for i in node.input]
    consts = {
        "nms_zero_i": np.array([0], np.int64),
        "nms_two_i": np.array([2], np.int64),
        "nms_four_i": np.array([4], np.int64),
        "nms_end_i": np.array([np.iinfo(np.int64).max], np.int64),
        "nms_one_i": np.array([1], np.int64),  # also axis 1
        "nms_half": np.array(2.0, np.float32),
        "nms_class_ids": np.arange(channels - 4, dtype=np.int64).reshape(1, -1, 1),
        "nms_zero_f": np.array(0.0, np.float32),
        "nms_minus_one": np.array(-1.0, np.float32),
        "nms_max_det": np.array([config.max_det], np.int64),
        "nms_iou": np.array([config.iou], np.float32),
        "nms_conf": np.array([config.conf], np.float32),
        "nms_bn_cols": np.array([0, 2], np.int64),
        "nms_col_batch": np.array(0, np.int64),
        "nms_col_class": np.array(1, np.int64),
        "nms_start": np.array(0, np.int64),
        "nms_step": np.array(1, np.int64),
        "nms_col": np.array([-1, 1], np.int64),
        "nms_row": np.array([1, -1], np.int64),
        "nms_cell": np.array([0, 0, 1], np.int64),
        "nms_pad_rows": np.zeros((config.max_det, 6), np.float32),
        "nms_pad_scores": np.full((1, config.max_det), -1.0, np.float32),
    }
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    n = helper.make_node
    nodes = [
        n("Cast", [raw], ["nms_y"], to=TensorProto.FLOAT),
        # boxes as corners, [B, N, 4]: centre -/+ size / 2, as optkit.measure.nms.xywh_to_xyxy
        n("Slice", ["nms_y", "nms_zero_i", "nms_two_i", "nms_one_i"], ["nms_centre"]),
        n("Slice", ["nms_y", "nms_two_i", "nms_four_i", "nms_one_i"], ["nms_size"]),
        n("Div", ["nms_size", "nms_half"], ["nms_half_size"]),
        n("Sub", ["nms_centre", "nms_half_size"], ["nms_top_left"]),
        n("Add", ["nms_centre", "nms_half_size"], ["nms_bottom_right"]),
        n("Concat", ["nms_top_left", "nms_bottom_right"], ["nms_corners"], axis=1),
        n("Transpose", ["nms_corners"], ["nms_boxes"], perm=[0, 2, 1]),
        # scores [B, nc, N], each box's best class alone
        n("Slice", ["nms_y", "nms_four_i", "nms_end_i", "nms_one_i"], ["nms_all_scores"]),
        n("ArgMax", ["nms_all_scores"], ["nms_best"], axis=1, keepdims=1),
        n("Equal", ["nms_best", "nms_class_ids"], ["nms_is_best"]),
        n("Where", ["nms_is_best", "nms_all_scores", "nms_zero_f"], ["nms_scores"]),
        n(
            "NonMaxSuppression",
            ["nms_boxes", "nms_scores", "nms_max_det", "nms_iou", "nms_conf"],
            ["nms_selected"],  # [K, 3]: image, class, box
            center_point_box=0,
        ),
        # the K kept detections as rows [K, 6], then max_det rows of zeros
        n("GatherND", ["nms_scores", "nms_selected"], ["nms_score"]),
        n("Gather", ["nms_selected", "nms_bn_cols"], ["nms_image_box"], axis=1),
        n("GatherND", ["nms_boxes", "nms_image_box"], ["nms_box"]),
        n("Gather", ["nms_selected", "nms_col_class"], ["nms_class_i"], axis=1),
        n("Cast", ["nms_class_i"], ["nms_class"], to=TensorProto.FLOAT),
        n("Reshape", ["nms_score", "nms_col"], ["nms_score_col"]),
        n("Reshape", ["nms_class", "nms_col"], ["nms_class_col"]),
        n("Concat", ["nms_box", "nms_score_col", "nms_class_col"], ["nms_rows"], axis=1),
        n("Concat", ["nms_rows", "nms_pad_rows"], ["nms_rows_padded"], axis=0),
        # per image: its detections' scores, -1 elsewhere, then max_det columns of -1; TopK max_det
        n("Shape", ["nms_y"], ["nms_shape"]),
        n("Gather", ["nms_shape", "nms_col_batch"], ["nms_batch"], axis=0),
        n("Range", ["nms_start", "nms_batch", "nms_step"], ["nms_images"]),
        n("Reshape", ["nms_images", "nms_col"], ["nms_image_col"]),
        n("Gather", ["nms_selected", "nms_col_batch"], ["nms_image_of"], axis=1),
        n("Reshape", ["nms_image_of", "nms_row"], ["nms_image_row"]),
        n("Equal", ["nms_image_col", "nms_image_row"], ["nms_mine"]),
        n("Reshape", ["nms_score", "nms_row"], ["nms_score_row"]),
        n("Where", ["nms_mine", "nms_score_row", "nms_minus_one"], ["nms_image_scores"]),
        n("Slice", ["nms_shape", "nms_zero_i", "nms_one_i", "nms_zero_i"], ["nms_batch_1d"]),
        n("Concat", ["nms_batch_1d", "nms_max_det"], ["nms_pad_shape"], axis=0),
        n("Expand", ["nms_pad_scores", "nms_pad_shape"], ["nms_pad"]),
        n("Concat", ["nms_image_scores", "nms_pad"], ["nms_ranked"], axis=1),
        n("TopK", ["nms_ranked", "nms_max_det"], ["nms_top", "nms_top_index"], axis=1, largest=1, sorted=1),
        n("Gather", ["nms_rows_padded", "nms_top_index"], ["nms_top_rows"], axis=0),
        n("Reshape", ["nms_top", "nms_cell"], ["nms_top_cell"]),
        n("Greater", ["nms_top_cell", "nms_zero_f"], ["nms_real"]),
        n("Where", ["nms_real", "nms_top_rows", "nms_zero_f"], [name]),
    ]
    g.node.extend(nodes)
    first = dims[0].dim_param or dims[0].dim_value
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [first, config.max_det, 6]))
    return model
