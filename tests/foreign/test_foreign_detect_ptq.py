"""ptq-calibrate of trusted foreign detectors (issue 15, part 6, ptq half): an Ultralytics 8.4-style one
whose head decodes its box bins through a DFL module holding a fixed 1x1 conv (the published layout), and
a YOLOv5 one. Both are scored by mAP, their post-processing stays float as optkit's own detector's does
(the DFL conv gets no quantizers), and the output keeps the file's layout with ModelOpt's save format
beside the fused float module."""

from __future__ import annotations

import math

import torch
from foreign_helpers import (
    IMGSZ,
    NAMES,
    ultralytics_file,
    v8_detector,
    write_det_data,
    yolov5_detector,
    yolov5_file,
)
from test_foreign_cli import EXTRA_KEYS, load_output, trusted

NC = len(NAMES)

# An Ultralytics 8.4-style head for the tests' yolo_like family: the anchor-free head of yolo_like.v8,
# whose box distances come from a DFL module (a 1x1 conv over each side's softmaxed bins, weights fixed
# to the bin indices 0..reg_max-1, no gradient) instead of a buffer. Written here from the design's
# description: the softmax expectation of the bin index.
V84 = """
import torch
from torch import nn

from yolo_like import v8


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.c1 = c1
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1)

    def forward(self, x):
        b, _, n = x.shape  # [B, 4 * c1, N] -> [B, 4, N]: each side's expected bin
        return self.conv(x.view(b, 4, self.c1, n).transpose(2, 1).softmax(1)).view(b, 4, n)


class Detect(v8.Detect):
    def __init__(self, nc=3, ch=(), reg_max=16):
        super().__init__(nc, ch, reg_max)
        self.dfl = DFL(reg_max)

    def decode(self, boxes, feats):
        dist = self.dfl(boxes)
        centres, steps = v8.cell_centres(feats, [int(s) for s in self.stride])
        centres, steps = centres.T.unsqueeze(0), steps.T.unsqueeze(0)
        x1y1, x2y2 = centres - dist[:, :2] * steps, centres + dist[:, 2:] * steps
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)


class DetectionModel(v8.DetectionModel):
    def __init__(self, nc=3, w=8, names=None):
        super().__init__(nc, w, names)
        old = self.model[-1]
        head = Detect(nc, (4 * w, 8 * w, 8 * w))
        head.load_state_dict(old.state_dict(), strict=False)
        head.f, head.i, head.stride = old.f, old.i, old.stride
        self.model[-1] = head
"""


def _v84_detector(code_dir):
    """yolo_like.v8's detector (varied scores, short boxes) with its head swapped for the DFL-conv one,
    same weights."""
    import sys

    (code_dir / "yolo_like" / "v84.py").write_text(V84)
    sys.path.insert(0, str(code_dir))
    try:
        import yolo_like.v84 as v84
    finally:
        sys.path.remove(str(code_dir))
    base = v8_detector(code_dir)
    model = v84.DetectionModel(nc=NC, w=8, names=dict(enumerate(NAMES)))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["model.12.dfl.conv.weight"] and unexpected == []  # fixed at construction
    with torch.no_grad():  # the same decode: the DFL conv is the buffer's expectation
        x = torch.rand(2, 3, IMGSZ, IMGSZ)
        assert torch.allclose(model.eval()(x)[0], base(x)[0], atol=1e-4)
    return model.eval()


def _quantizers(module) -> dict:
    return {n: m for n, m in module.named_modules() if type(m).__name__ == "TensorQuantizer"}


def _restored(out: dict):
    """ModelOpt's documented restore: the recipe onto the float module, then the weights with amax."""
    import modelopt.torch.opt as mto

    model = mto.restore_from_modelopt_state(out["model"].float(), out["modelopt_state"])
    model.load_state_dict(out["modelopt_weights"])
    return model.eval()


def _ptq(cli, path, data, code_dir, *extra) -> dict:
    r = cli("ptq-calibrate", path, "--data", data, *trusted(code_dir), "--num-images", "8", "--json", *extra)
    assert r.code == 0, r.err
    return r.json()


def test_ultralytics_detector_keeps_its_dfl_conv_float(cli, code_dir, tmp_path):
    model = _v84_detector(code_dir)
    data, images = write_det_data(tmp_path / "det", model)
    best = ultralytics_file(model, tmp_path / "best.pt", "best", extra={"version": "8.4.0"})
    d = _ptq(cli, best, data, code_dir)
    assert d["float_scope"] == {
        "head": "model.12",
        "modules": ["model.12.dfl"],
        "layers": ["model.12.dfl.conv"],
        "ops": "DFL decode, class sigmoid, box decode, final concat",
    }
    assert 0.2 < d["float_map"] <= 1 and 0 <= d["int8_map"] <= 1 and [m["key"] for m in d["shown"]] == [
        "map", "map50"
    ]  # fmt: skip
    assert d["sqnr_boxes_db"] > 15 and d["sqnr_scores_db"] > 10 and d["top1_agreement"] is None
    # the output: the user's tools load it (their code + modelopt), in its own layout
    original = load_output(best, code_dir)
    out = load_output(tmp_path / "best-int8.pt", code_dir)
    assert set(EXTRA_KEYS) <= set(out) and set(original) <= set(out)
    assert out["version"] == "8.4.0" and out["train_args"] == original["train_args"] and out["epoch"] == -1
    assert out["optkit_lineage"][-1]["metrics"]["int8_map"] == d["int8_map"]
    restored = _restored(out)
    enabled = {n for n, q in _quantizers(restored).items() if q.is_enabled}
    assert not any(n.startswith("model.12.dfl.") for n in enabled)  # the DFL conv computes in float
    assert len(enabled) == 2 * d["quantized_layers"] and "model.12.box.0.1.input_quantizer" in enabled
    x = torch.rand(4, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        again = _restored(load_output(tmp_path / "best-int8.pt", code_dir))
        ref, got, got_again = model(x)[0], restored(x)[0], again(x)[0]
    assert torch.equal(got, got_again)  # the file restores to the same outputs
    assert not torch.equal(got, ref)  # with fake quantization in the loop
    noise = (ref[:, :4] - got[:, :4]).double().pow(2).sum()
    assert 10 * math.log10(ref[:, :4].double().pow(2).sum() / noise) > 15  # boxes close to float


def test_quantizing_the_dfl_conv_is_what_the_scope_prevents(code_dir):
    """The same model through the library without the float scope: its DFL conv would be quantized."""
    from optkit.quant.config import QuantConfig
    from optkit.quant.float_scope import float_scope
    from optkit.quant.quantizers import insert_quantizers, quantizable_layers, quantized_layers

    model = _v84_detector(code_dir)
    assert "model.12.dfl.conv" in quantizable_layers(model)
    scope = float_scope(model)
    plain = insert_quantizers(_copy(model), QuantConfig())
    scoped = insert_quantizers(_copy(model), QuantConfig(float_modules=scope.modules))
    assert set(quantized_layers(plain)) - set(quantized_layers(scoped)) == {"model.12.dfl.conv"}


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_yolov5_detector_is_scored_and_keeps_its_layout(cli, code_dir, tmp_path):
    model = yolov5_detector(code_dir)
    data, _ = write_det_data(tmp_path / "det", model)
    best = yolov5_file(model, tmp_path / "v5.pt")
    d = _ptq(cli, best, data, code_dir, "--sensitivity")
    assert (
        d["float_scope"]["modules"] == [] and d["float_scope"]["ops"] == "sigmoid, box decode, final concat"
    )
    assert 0.2 < d["float_map"] <= 1 and d["int8_map"] is not None and "sqnr_scores_db" in d
    rows = d["sensitivity"]  # ranked by the worse of boxes and scores of the [B, 4 + nc, N] reading
    assert all(row["sqnr_db"] == min(row["sqnr_boxes_db"], row["sqnr_scores_db"]) for row in rows)
    out = load_output(tmp_path / "v5-int8.pt", code_dir)
    original = load_output(best, code_dir)
    assert set(original) <= set(out) and out["opt"] == original["opt"] and out["git"] == original["git"]
    assert len([q for q in _quantizers(_restored(out)).values() if q.is_enabled]) == 2 * d["quantized_layers"]


def test_auto_skip_budget_is_worded_for_a_foreign_detector(cli, code_dir, tmp_path):
    model = yolov5_detector(code_dir)
    data, _ = write_det_data(tmp_path / "det", model)
    best = yolov5_file(model, tmp_path / "v5.pt")
    r = cli("ptq-calibrate", best, "--data", data, *trusted(code_dir), "--auto-skip", "-0.5")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert "--auto-skip takes a mAP50-95 drop in points" in r.err
    assert not (tmp_path / "v5-int8.pt").exists()
