"""The anchor-free YOLO detectors (optkit.models.yolo_det, detect_blocks): the published sizes, the head's
raw / decoded layouts and box geometry, eval-mode raw outputs, output layers, rebuilding, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from optkit.errors import ModelError
from optkit.measure.flops import count_flops
from optkit.models import count_params, create_model, get_spec
from optkit.models.detect_blocks import Bottleneck3x3, C2f, Detect
from optkit.models.parts import head_name, kept_whole, output_layer_names, output_layers
from optkit.models.weight_init import randomize_bn
from optkit.stages.fuse import FuseConfig, fuse

NC = 3
REG = 16  # DFL bins


def _tiny(nc: int = NC, **options) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(create_model("test-det", num_classes=nc, **options), bias=True)


def _cells(h: int, w: int) -> int:
    """Anchor points of an h x w input: one per cell at strides 8, 16 and 32."""
    return sum((h // s) * (w // s) for s in (8, 16, 32))


# Published YOLOv8 figures with 80 classes at 640 px: 3.2 M / 8.7 GFLOPs (n), 11.2 M / 28.6 GFLOPs (s).
# Exact counts: 3,157,200 and 11,166,560 parameters, 16 of them the DFL's fixed bin weights, which here
# are a buffer (not a parameter). GFLOPs are the repo's counter's: 2 x thop's MACs, of the BN-folded model.
@pytest.mark.parametrize(
    ("name", "params", "exact", "gflops"),
    [
        ("yolo-det-n", 3.2e6, 3_157_184, 8.7),
        pytest.param("yolo-det-s", 11.2e6, 11_166_544, 28.6, marks=pytest.mark.slow),
    ],
)
def test_published_size(name, params, exact, gflops):
    model = create_model(name, num_classes=80)
    assert count_params(model) == exact and count_params(model) == pytest.approx(params, rel=0.03)
    fused, _ = fuse(model, FuseConfig(check=False))
    assert count_flops(fused, 640) == pytest.approx(gflops, rel=0.03)
    assert count_flops(model, 640) == pytest.approx(gflops, rel=0.03)  # BN unfolded: +1.8% (n), +0.7% (s)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 640, 640)).shape == (1, 84, 8400)


def test_registry_entries():
    for name in ("yolo-det-n", "yolo-det-s", "test-det"):
        spec = get_spec(name)
        assert spec.task == "detect" and spec.default_imgsz == (64 if spec.is_test else 640)
    assert not get_spec("yolo-det-n").is_test and "3.2M params" in get_spec("yolo-det-n").description
    assert count_params(create_model("test-det")) < 50_000


def test_layer_table_of_the_n_scale():
    model = create_model("yolo-det-n", num_classes=80)
    blocks = model.model
    assert len(blocks) == 23 and isinstance(blocks[22], Detect)
    assert [blocks[i].conv.stride for i in (0, 1, 3, 5, 7, 16, 19)] == [(2, 2)] * 7
    assert [blocks[i].cv2.conv.out_channels for i in (2, 4, 6, 8)] == [32, 64, 128, 256]  # width 0.25
    assert [len(blocks[i].m) for i in (2, 4, 6, 8, 12, 15, 18, 21)] == [1, 2, 2, 1, 1, 1, 1, 1]  # depth 0.33
    assert all(blocks[i].m[0].add for i in (2, 4, 6, 8)) and not any(blocks[i].m[0].add for i in (12, 15, 18))
    assert isinstance(blocks[2], C2f) and isinstance(blocks[2].m[0], Bottleneck3x3)
    assert blocks[2].m[0].cv1.conv.kernel_size == blocks[2].m[0].cv2.conv.kernel_size == (3, 3)
    head = blocks[22]
    assert [b[0].conv.in_channels for b in head.box] == [64, 128, 256]  # P3, P4, P5 from blocks 15, 18, 21
    assert head.box[0][0].conv.out_channels == 64 and head.cls[0][0].conv.out_channels == 80  # c2, c3
    assert create_model("yolo-det-n", num_classes=5).model[22].cls[0][0].conv.out_channels == 64
    assert create_model("yolo-det-s", num_classes=200).model[22].cls[0][0].conv.out_channels == 128


def test_head_attributes_and_bias_init():
    head = create_model("test-det", num_classes=4).model[-1]
    assert head.nc == 4 and head.reg_max == REG and head.strides == (8, 16, 32)
    for box, cls, stride in zip(head.box, head.cls, head.strides, strict=True):
        assert torch.equal(box[-1].bias, torch.ones(4 * REG))
        assert torch.allclose(cls[-1].bias, torch.full((4,), math.log(5 / 4 / (640 / stride) ** 2)))
    assert list(head.dfl.parameters()) == [] and not any("dfl" in k for k in head.state_dict())


@pytest.mark.parametrize(("h", "w"), [(64, 64), (64, 96), (128, 32)])
def test_training_output_is_raw_maps(h, w):
    model = _tiny().train()
    raw = model(torch.randn(2, 3, h, w))
    assert [tuple(r.shape) for r in raw] == [(2, 4 * REG + NC, h // s, w // s) for s in (8, 16, 32)]
    assert all(torch.isfinite(r).all() for r in raw)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (64, 64), (64, 96), (96, 160)])
def test_eval_output_layout(h, w):
    model = _tiny().eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, h, w))
    assert y.shape == (2, 4 + NC, _cells(h, w))
    assert ((y[:, 4:] > 0) & (y[:, 4:] < 1)).all()  # probabilities
    assert (y[:, 2:4] > 0).all()  # widths, heights


def test_decode_of_forward_raw_is_the_eval_output():
    model = _tiny().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        raw = model.forward_raw(x)
        assert [r.shape[-2:] for r in raw] == [(8, 12), (4, 6), (2, 3)]
        assert torch.equal(model.model[-1].decode(raw), model(x))


def test_forward_raw_in_eval_uses_but_keeps_bn_statistics():
    model = _tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        raw = model.forward_raw(x)
        again = model.forward_raw(x)
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(raw, again, strict=True))
    model.train()  # batch statistics give other maps: eval really used the running ones
    assert not torch.allclose(model.forward_raw(x)[0], raw[0])
    assert all(torch.equal(a, b) for a, b in zip(model.forward_raw(x), model(x), strict=True))


def test_all_zero_logits_decode_to_15_cell_boxes_at_cell_centres():
    """Uniform DFL -> every side 7.5 cells; class logit 0 -> probability 0.5."""
    head = create_model("test-det", num_classes=2).model[-1]
    raw = [torch.zeros(1, 4 * REG + 2, 64 // s, 96 // s) for s in (8, 16, 32)]
    y = head.decode(raw)
    assert y.shape == (1, 6, _cells(64, 96))
    # level 0 (stride 8), row-major: point 13 is cell (x=1, y=1) of a 12-wide map -> centre (12, 12) px
    assert torch.allclose(y[0, :, 13], torch.tensor([12.0, 12.0, 120.0, 120.0, 0.5, 0.5]))
    # first point of level 2 (stride 32): cell (0, 0) -> centre (16, 16), side 15 * 32 px
    first_p5 = 8 * 12 + 4 * 6
    assert torch.allclose(y[0, :, first_p5], torch.tensor([16.0, 16.0, 480.0, 480.0, 0.5, 0.5]))


def test_peaked_distributions_decode_to_the_exact_box():
    """Sides l=3, t=1, r=5, b=2 cells from cell (2, 1) of level 0 (anchor (20, 12) px, stride 8)."""
    head = create_model("test-det", num_classes=1).model[-1]
    raw = [torch.zeros(1, 4 * REG + 1, 64 // s, 64 // s) for s in (8, 16, 32)]
    for side, bin_ in enumerate((3, 1, 5, 2)):
        raw[0][0, side * REG + bin_, 1, 2] = 50.0  # softmax ~ one-hot
    raw[0][0, 4 * REG, 1, 2] = 2.0  # class logit
    box = head.decode(raw)[0, :, 1 * 8 + 2]
    # x1 = 20 - 24 = -4, x2 = 20 + 40 = 60; y1 = 12 - 8 = 4, y2 = 12 + 16 = 28
    expected = torch.tensor([28.0, 16.0, 64.0, 24.0, 1 / (1 + math.exp(-2.0))])
    assert torch.allclose(box, expected, atol=1e-4)


def test_output_layers_are_the_final_box_and_class_convs():
    model = create_model("test-det", num_classes=7)
    assert head_name(model) == "model.22"
    names = output_layer_names(model)
    assert names == [f"model.22.{kind}.{i}.2" for kind in ("box", "cls") for i in range(3)]
    layers = output_layers(model)
    assert all(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in layers)
    assert [m.out_channels for m in layers] == [4 * REG] * 3 + [7] * 3
    assert kept_whole(model) == []


def test_create_model_round_trip_through_arch_options():
    model = create_model("yolo-det-n", num_classes=4, act="relu", width_multiple=0.125, depth_multiple=0.5)
    assert model.arch_options == {"act": "relu", "width_multiple": 0.125, "depth_multiple": 0.5}
    assert model.stride == 32 and model.num_classes == 4 and model.model[-1].nc == 4
    assert model.model[0].conv.out_channels == 8 and len(model.model[4].m) == 3
    assert any(isinstance(m, nn.ReLU) for m in model.modules())
    assert not any(isinstance(m, nn.SiLU) for m in model.modules())
    again = create_model(model.arch_name, model.num_classes, **model.arch_options)
    again.load_state_dict(model.state_dict())  # strict
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), again.eval()(x))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"act": "gelu"}, "act must be one of"),
        ({"width_multiple": 0}, "width_multiple must be a number > 0"),
        ({"depth_multiple": "deep"}, "depth_multiple must be a number > 0"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ModelError, match=message):
        create_model("yolo-det-n", **options)


def test_detect_needs_three_levels():
    with pytest.raises(ModelError, match="takes 3 feature maps"):
        Detect(2, (16, 32))


def test_eval_output_exports_to_onnx_and_onnx_runtime_matches(tmp_path):
    from optkit.onnxrt import create_session
    from optkit.stages.export import ExportConfig, export_onnx

    model = _tiny(nc=4).eval()
    config = ExportConfig(imgsz=64, dynamic=True, simplify=False, output_names=("output0",))
    report = export_onnx(model, tmp_path / "det.onnx", config)
    assert [c.shape for c in report.cases] == [[1, 3, 64, 64], [4, 3, 64, 64], [1, 3, 96, 96]]
    assert all(c.max_rel <= 1e-4 for c in report.cases), report.cases
    session = create_session(tmp_path / "det.onnx", threads=1)
    x = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(3))  # non-square, too
    (out,) = session.run(["output0"], {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == (2, 8, _cells(64, 128))
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
