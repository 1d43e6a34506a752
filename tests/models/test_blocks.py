"""Building blocks and activations: shapes, names and the settings other stages depend on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.errors import ModelError
from optkit.models.activations import make_act
from optkit.models.blocks import C3, SPPF, Bottleneck, Classify, Conv, autopad, make_divisible


def test_autopad_and_make_divisible():
    assert [autopad(k) for k in (1, 3, 5, 7)] == [0, 1, 2, 3]
    assert autopad(3, d=2) == 2 and autopad(6, p=2) == 2
    assert [make_divisible(x) for x in (16, 16.5, 8 * 0.25, 1280 * 0.33)] == [16, 24, 8, 424]


def test_make_act():
    a, b = make_act("silu"), make_act("silu")
    assert isinstance(a, nn.SiLU) and a is not b and a.inplace
    with pytest.raises(ModelError, match="act must be one of hardswish, relu, relu6, silu"):
        make_act("mish")


def test_conv_names_and_yolo_batchnorm():
    m = Conv(4, 8, 3, 2, act="relu")
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "act"]
    assert m.conv.bias is None and m.bn.eps == 1e-3 and m.bn.momentum == 0.03
    assert m(torch.randn(1, 4, 16, 16)).shape == (1, 8, 8, 8)
    assert isinstance(Conv(4, 8, act=None).act, nn.Identity)


def test_conv_forward_fuse_matches_after_folding_bn():
    m = Conv(4, 8, 3).eval()
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)
    ref = m(x)
    scale = m.bn.weight / torch.sqrt(m.bn.running_var + m.bn.eps)  # per output channel
    fused = nn.Conv2d(4, 8, 3, 1, 1)
    with torch.no_grad():
        fused.weight.copy_(m.conv.weight * scale[:, None, None, None])
        fused.bias.copy_(m.bn.bias - m.bn.running_mean * scale)
    m.conv = fused
    torch.testing.assert_close(m.forward_fuse(x), ref, atol=1e-5, rtol=1e-5)


def test_bottleneck_shortcut_only_when_shapes_match():
    assert Bottleneck(8, 8).add and not Bottleneck(8, 16).add and not Bottleneck(8, 8, shortcut=False).add
    m = Bottleneck(8, 8)
    nn.init.zeros_(m.cv2.bn.weight)  # residual branch outputs act(0) = 0 for silu
    nn.init.zeros_(m.cv2.bn.bias)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(m.eval()(x), x)


def test_c3_and_sppf_shapes():
    c3 = C3(16, 32, n=2)
    assert len(c3.m) == 2 and c3.cv3.conv.in_channels == 32
    assert c3(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)
    sppf = SPPF(16, 24)
    assert sppf.cv2.conv.in_channels == 32  # 4 maps of 8 channels
    assert sppf(torch.randn(1, 16, 6, 10)).shape == (1, 24, 6, 10)


def test_classify_with_and_without_conv():
    head = Classify(16, 5, c_=32, dropout=0.1)
    assert isinstance(head.conv, Conv) and head.linear.in_features == 32 and head.drop.p == 0.1
    assert head(torch.randn(2, 16, 3, 5)).shape == (2, 5)
    bare = Classify(16, 5, c_=None)
    assert isinstance(bare.conv, nn.Identity) and bare.linear.in_features == 16
    assert bare(torch.randn(2, 16, 1, 1)).shape == (2, 5)
