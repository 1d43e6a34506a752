"""Every registered model (real and test) has the shape the rest of optkit relies on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.models import ACTIVATIONS, count_params, create_model, get_spec, list_models

ALL_MODELS = list_models(include_test=True)
BIG_MODELS = set(list_models())
ACT_CLASSES = {"hardswish": nn.Hardswish, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}
NUM_CLASSES = 5


def _detects(name: str) -> bool:
    return get_spec(name).task == "detect"


def _check_output(name: str, model: nn.Module, y, batch: int, h: int, w: int) -> None:
    """A classifier's logits (batch, classes); a detector's raw maps (training) or decoded boxes and
    class probabilities [batch, 4 + classes, anchor points] (eval), as optkit.models.yolo_det documents."""
    if not _detects(name):
        assert y.shape == (batch, NUM_CLASSES), (name, h, w)
        assert torch.isfinite(y).all()
        return
    strides = (8, 16, 32)
    if model.training:
        channels = 4 * model.model[-1].reg_max + NUM_CLASSES
        assert [tuple(r.shape) for r in y] == [(batch, channels, h // s, w // s) for s in strides], (
            name,
            h,
            w,
        )
        assert all(torch.isfinite(r).all() for r in y)
    else:
        assert y.shape == (batch, 4 + NUM_CLASSES, sum((h // s) * (w // s) for s in strides)), (name, h, w)
        assert torch.isfinite(y).all()


def _loss(name: str, y) -> torch.Tensor:
    """A scalar that depends on every output (a detector's training output is a list of maps)."""
    if _detects(name):
        return sum(r.pow(2).mean() for r in y)
    return nn.functional.cross_entropy(y, torch.arange(len(y)) % NUM_CLASSES)


def _sizes(name: str) -> list[tuple[int, int]]:
    """(H, W) in pixels: big models only at the smallest size to keep the suite fast."""
    return [(32, 32), (32, 64)] if name in BIG_MODELS else [(32, 32), (64, 64), (64, 96)]


@pytest.fixture(scope="module", params=ALL_MODELS)
def built(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, create_model(request.param, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("train", [False, True])
def test_output_shape(built, train):
    name, model = built
    model.train(train)
    for h, w in _sizes(name):
        with torch.no_grad():
            y = model(torch.randn(2, 3, h, w))
        _check_output(name, model, y, 2, h, w)


def test_layout(built):
    name, model = built
    assert isinstance(model.model, nn.Sequential)
    head = model.model[-1]
    if _detects(name):
        assert head.nc == NUM_CLASSES == model.num_classes and head.strides == (8, 16, 32)
    else:
        assert isinstance(head.linear, nn.Linear)
        assert head.linear.out_features == NUM_CLASSES == model.num_classes
    assert model.stride == 32
    assert next(iter(model.state_dict())).startswith("model.0.")


def test_stride_is_32(built):
    """A 32x32 input reaches the head as a 1x1 map; 64x96 as 2x3 (a detector's coarsest map)."""
    _, model = built
    seen = []

    def coarsest(module, args):
        maps = args[0]
        seen.append((maps[-1] if isinstance(maps, list) else maps).shape[-2:])

    hook = model.model[-1].register_forward_pre_hook(coarsest)
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 64, 96))
    hook.remove()
    assert seen == [(1, 1), (2, 3)]


def test_backward_reaches_first_block(built):
    name, model = built
    model.train()
    model.zero_grad()
    _loss(name, model(torch.randn(2, 3, 32, 32))).backward()
    grads = [p.grad for p in model.model[0].parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_activation(name, act):
    model = create_model(name, num_classes=3, act=act)
    classes = {type(m) for m in model.modules()}
    assert ACT_CLASSES[act] in classes
    assert not (classes & (set(ACT_CLASSES.values()) - {ACT_CLASSES[act]}))  # no other activation left
    if name not in BIG_MODELS:  # in-place activations must not break autograd
        _loss(name, model(torch.randn(2, 3, 32, 32))).backward()


def test_tiny_models_are_tiny():
    for name in list_models(include_test=True):
        if name not in BIG_MODELS:
            assert count_params(create_model(name)) < 50_000, name


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_689_512), ("mobilenet-v2", 3_504_872)])
def test_torchvision_parameter_counts(name, expected):
    """Same counts as torchvision.models.resnet18 / mobilenet_v2 with 1000 classes."""
    assert count_params(create_model(name, num_classes=1000)) == expected


def test_yolo_parameter_counts():
    n = count_params(create_model("yolo-cls-n", num_classes=1000))
    s = count_params(create_model("yolo-cls-s", num_classes=1000))
    assert 1_000_000 < n < 3_000_000
    assert s > n


def test_mobilenet_width_multiple():
    """torchvision rounds to the nearest multiple of 8 and never narrows the 1280-channel head."""
    model = create_model("mobilenet-v2", num_classes=1000, width_multiple=0.5)
    assert model.model[0].conv.out_channels == 16
    assert model.model[-1].linear.in_features == 1280
    # As torchvision and Keras at alpha 0.5 (Keras also counts BN statistics: 1,987,224).
    assert count_params(model) == 1_968_680
