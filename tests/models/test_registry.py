"""The registry: names, options and the attributes create_model stamps on a model."""

from __future__ import annotations

import json

import pytest
import torch

from optkit.errors import ModelError
from optkit.models import (
    ACTIVATIONS,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
    registry,
)

REAL_MODELS = ["mobilenet-v2", "resnet18", "yolo-cls-n", "yolo-cls-s", "yolo-det-n", "yolo-det-s"]
TEST_MODELS = ["test-concat", "test-det", "test-resnet", "test-tiny"]


def test_list_models_hides_test_models_by_default():
    assert list_models() == REAL_MODELS
    listed, builtin = list_models(include_test=True), sorted(REAL_MODELS + TEST_MODELS)
    assert [m for m in listed if m in builtin] == builtin and listed == sorted(listed)
    assert all(get_spec(m).is_test for m in listed if m not in builtin)  # registered by other test modules


def test_get_spec():
    spec = get_spec("yolo-cls-n")
    assert isinstance(spec, ModelSpec)
    assert spec.name == "yolo-cls-n" and spec.default_imgsz == 224 and not spec.is_test
    assert spec.description
    assert get_spec("test-tiny").is_test


def test_unknown_model_lists_known_models():
    with pytest.raises(ModelError) as e:
        create_model("foo")
    assert str(e.value) == (
        "unknown model 'foo'; known models: "
        "mobilenet-v2, resnet18, yolo-cls-n, yolo-cls-s, yolo-det-n, yolo-det-s"
    )
    with pytest.raises(ModelError, match="known models: mobilenet-v2"):
        get_spec("foo")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ModelError) as e:
        create_model("yolo-cls-n", widht=0.5)
    assert str(e.value) == (
        "unknown option 'widht' for model 'yolo-cls-n'; "
        "valid options: act, depth_multiple, dropout, width_multiple"
    )


def test_option_values_must_be_json_simple():
    with pytest.raises(ModelError, match="must be a str, number, bool or None"):
        create_model("test-tiny", act=torch.nn.ReLU)


@pytest.mark.parametrize(
    "name", ["test-tiny", "test-resnet", "resnet18", "mobilenet-v2", "yolo-cls-n", "yolo-det-n", "test-det"]
)
def test_bad_act(name):
    with pytest.raises(ModelError) as e:
        create_model(name, act="gelu")
    assert str(e.value).startswith("act must be one of hardswish, relu, relu6, silu")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("yolo-cls-n", {"width_multiple": 0}, "width_multiple must be a number > 0"),
        ("yolo-cls-n", {"depth_multiple": "big"}, "depth_multiple must be a number > 0"),
        ("yolo-cls-n", {"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ("mobilenet-v2", {"width_multiple": -1.0}, "width_multiple must be a number > 0"),
        ("resnet18", {"zero_init_residual": 1}, "zero_init_residual must be true or false"),
    ],
)
def test_bad_option_values(name, options, message):
    with pytest.raises(ModelError, match=message):
        create_model(name, **options)


@pytest.mark.parametrize("num_classes", [0, -3, 2.0, "10", True, None])
def test_bad_num_classes(num_classes):
    with pytest.raises(ModelError, match="num_classes must be an integer >= 1"):
        create_model("test-tiny", num_classes=num_classes)


def test_create_model_sets_attributes():
    model = create_model("test-tiny", num_classes=7, act="relu")
    assert model.stride == 32
    assert model.num_classes == 7
    assert model.arch_name == "test-tiny"
    assert model.arch_options == {"act": "relu"}
    assert json.loads(json.dumps(model.arch_options)) == model.arch_options
    assert create_model("test-resnet").arch_options == {}


def test_rebuild_from_attributes_gives_same_state_dict_layout():
    model = create_model("yolo-cls-n", num_classes=5, width_multiple=0.125, act="relu")
    again = create_model(model.arch_name, model.num_classes, **model.arch_options)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(model.state_dict())  # strict


def test_options_change_the_architecture():
    small = create_model("yolo-cls-n", width_multiple=0.125)
    default = create_model("yolo-cls-n")
    assert small.model[0].conv.out_channels == 8 and default.model[0].conv.out_channels == 16
    deep = create_model("yolo-cls-n", depth_multiple=1.0)
    assert len(deep.model[8].m) == 3 and len(default.model[8].m) == 1
    assert create_model("yolo-cls-n", dropout=0.3).model[-1].drop.p == 0.3
    assert create_model("mobilenet-v2").model[-1].drop.p == 0.2


def test_duplicate_registration_raises(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry alone
    with pytest.raises(ModelError, match="'resnet18' is already registered"):
        register_model("resnet18", default_imgsz=224, description="again")(lambda num_classes=10: None)

    @register_model("test-extra", default_imgsz=32, description="extra", is_test=True)
    def factory(num_classes: int = 10, act: str = "silu") -> torch.nn.Module:
        return create_model("test-tiny", num_classes, act=act)

    assert factory is not None and "test-extra" in list_models(include_test=True)
    assert "test-extra" not in list_models()
    with pytest.raises(ModelError, match="already registered"):
        register_model("test-extra", default_imgsz=32, description="extra")(factory)


def test_activations_tuple():
    assert ACTIVATIONS == ("hardswish", "relu", "relu6", "silu")
