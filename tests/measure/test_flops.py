"""FLOPs and parameter counts: the known ResNet-18 figure, no traces left in the model, and
"unavailable" (None) rather than 0 when counting fails."""

from __future__ import annotations

import pytest
import thop
import torch

from optkit.measure.flops import count_flops, count_params
from optkit.models import create_model


@pytest.fixture(scope="module")
def resnet18():
    return create_model("resnet18", num_classes=1000).eval()


def test_resnet18_is_3_6_gflops_and_11_7m_params(resnet18):
    gflops = count_flops(resnet18, 224)
    assert gflops == pytest.approx(3.64, rel=0.03)  # 1.82 GMACs x 2
    assert count_params(resnet18) == 11_689_512


def test_flops_scale_with_batch_and_area():
    model = create_model("test-tiny").eval()
    one = count_flops(model, 32)
    assert count_flops(model, 32, batch=2) == pytest.approx(2 * one, rel=1e-6)
    assert count_flops(model, 64) == pytest.approx(4 * one, rel=0.05)  # the head's Linear does not scale


def test_model_is_left_without_thop_traces():
    model = create_model("test-tiny").train()
    keys = list(model.state_dict())
    assert count_flops(model, 32) > 0
    assert list(model.state_dict()) == keys
    assert model.training
    for m in model.modules():
        assert "total_ops" not in m._buffers and "total_params" not in m._buffers
        assert "total_ops" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_failure_is_none_not_zero(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(thop, "profile", broken)
    assert count_flops(create_model("test-tiny"), 32) is None


def test_model_that_cannot_run_is_none():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))  # wants 1-channel input, gets RGB
    assert count_flops(model, 32) is None
