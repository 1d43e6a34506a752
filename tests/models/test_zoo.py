"""Every registered model (real and test) has the shape the rest of optkit relies on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.models import ACTIVATIONS, count_params, create_model, list_models

ALL_MODELS = list_models(include_test=True)
BIG_MODELS = set(list_models())
ACT_CLASSES = {"hardswish": nn.Hardswish, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}
NUM_CLASSES = 5


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
        assert y.shape == (2, NUM_CLASSES), (name, h, w)
        assert torch.isfinite(y).all()


def test_layout(built):
    _, model = built
    assert isinstance(model.model, nn.Sequential)
    head = model.model[-1]
    assert isinstance(head.linear, nn.Linear)
    assert head.linear.out_features == NUM_CLASSES == model.num_classes
    assert model.stride == 32
    assert next(iter(model.state_dict())).startswith("model.0.")


def test_stride_is_32(built):
    """A 32x32 input reaches the head as a 1x1 map; 64x96 as 2x3."""
    _, model = built
    seen = []
    hook = model.model[-1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 64, 96))
    hook.remove()
    assert seen == [(1, 1), (2, 3)]


def test_backward_reaches_first_block(built):
    _, model = built
    model.train()
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
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
        model(torch.randn(2, 3, 32, 32)).sum().backward()


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
