"""Every model says which block is its head and which layers make its outputs (optkit.models.parts);
prune, structured prune, fine-tuning and the foreign-model code use that one answer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.models import create_model, get_spec, list_models
from optkit.models.parts import head_name, kept_whole, output_layer_names, output_layers


@pytest.mark.parametrize("name", list_models(include_test=True))
def test_zoo_models_declare_their_head_and_output_layer(name):
    model = create_model(name, num_classes=7)
    assert callable(getattr(type(model), "head_name", None))  # declared by the class
    assert head_name(model) == f"model.{len(model.model) - 1}"
    if get_spec(name).task == "detect":  # per level a box conv (4 sides x 16 DFL bins) and a class conv
        layers = output_layers(model)
        assert all(isinstance(m, nn.Conv2d) for m in layers)
        assert sorted(m.out_channels for m in layers) == [7] * 3 + [64] * 3
        assert all(n.startswith(f"{head_name(model)}.") for n in output_layer_names(model))
    else:
        (layer,) = output_layers(model)
        assert isinstance(layer, nn.Linear) and layer.out_features == 7
        assert output_layer_names(model) == [f"{head_name(model)}.linear"]
    assert kept_whole(model) == []


class _YoloStyle(nn.Module):
    """A foreign model in the YOLO layout (`model.model[-1]` is the head), declaring nothing."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 8), head)


def test_a_foreign_classifier_keeps_its_logits_linear_only():
    model = _YoloStyle(nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.Softmax(1)))
    model.num_classes = 4
    assert output_layer_names(model) == ["model.2.1"]
    assert kept_whole(model) == []


def test_a_foreign_detection_head_is_kept_whole():
    model = _YoloStyle(nn.ModuleList([nn.Conv2d(8, 64, 1), nn.Conv2d(8, 3, 1)]))  # box and class convs
    model.num_classes = 3
    assert output_layer_names(model) == []
    assert kept_whole(model) == ["model.2"]


def test_a_model_without_the_yolo_layout_uses_its_last_linear():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert head_name(model) is None and output_layer_names(model) == ["2"] and kept_whole(model) == []
    assert torch.equal(output_layers(model)[0].weight, model[2].weight)
