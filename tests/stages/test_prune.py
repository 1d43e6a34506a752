"""Unstructured L1 pruning: achieved sparsity on the stated basis, what stays untouched, masks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from optkit.checkpoint import (
    build_model,
    checkpoint_from_model,
    load_checkpoint,
    replay_transform,
    save_checkpoint,
)
from optkit.errors import CheckpointError, ConfigError, OptkitError
from optkit.models import create_model
from optkit.models.parts import output_layers
from optkit.stages.prune import (
    PruneConfig,
    apply_masks_,
    measure_sparsity,
    prunable_weights,
    prune_unstructured,
    replay,
    sparsity_masks,
    sparsity_transform,
)

MODELS = ["resnet18", "yolo-cls-n"]
HEADS = {"resnet18": "model.5.linear.weight", "yolo-cls-n": "model.9.linear.weight"}


@pytest.fixture(scope="module", params=MODELS)
def original(request) -> tuple[str, nn.Module, dict[str, torch.Tensor]]:
    """(name, model, a copy of its state_dict taken at creation)."""
    torch.manual_seed(0)
    model = create_model(request.param, num_classes=10)
    return request.param, model, {k: v.clone() for k, v in model.state_dict().items()}


def _zeros_and_total(weights) -> tuple[int, int]:
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def test_prunable_weights_are_conv_and_linear_weights_without_the_head(original):
    name, model, _ = original
    weights = prunable_weights(model)
    assert weights and all(k.endswith(".weight") and v.dim() in (2, 4) for k, v in weights.items())
    assert HEADS[name] not in weights
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(weights) == sorted(f"{n}.weight" for n in convs)  # every conv, no BN, no bias
    assert HEADS[name] in prunable_weights(model, include_head=True)
    assert output_layers(model) == [model.model[-1].linear]


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.8])
def test_global_pruning_hits_the_target_and_leaves_the_rest_alone(original, amount):
    name, model, before = original
    pruned, report = prune_unstructured(model, PruneConfig(amount))
    weights = prunable_weights(pruned)
    zeros, total = _zeros_and_total(weights.values())
    # exactly k zeros (ties broken by position), so well within 1 percentage point
    assert zeros == round(amount * total) == report.zeros and total == report.total
    assert abs(report.overall - amount) < 0.01
    assert set(report.layers) == set(weights)
    assert sum(z for z, _ in report.layers.values()) == zeros
    # L1 globally: every pruned weight had a magnitude <= every kept one
    orig = torch.cat([before[k].reshape(-1) for k in weights]).abs()
    kept = torch.cat([weights[k].detach().reshape(-1) != 0 for k in weights])
    assert orig[~kept].max() <= orig[kept].min()
    # kept weights keep their values; the head, biases and BN are untouched; the input model is unchanged
    after = pruned.state_dict()
    for key, value in after.items():
        if key in weights:
            assert torch.equal(value[value != 0], before[key][value != 0])
        else:
            assert torch.equal(value, before[key]), key
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert HEADS[name] not in report.layers


@pytest.mark.parametrize("amount", [0.3, 0.8])
def test_layer_scope_prunes_every_layer_to_the_target(original, amount):
    _, model, before = original
    pruned, report = prune_unstructured(model, PruneConfig(amount, scope="layer"))
    assert report.scope == "layer" and report.layers
    for key, w in prunable_weights(pruned).items():
        zeros, total = report.layers[key]
        assert zeros == int((w == 0).sum()) == round(amount * total), key
        assert abs(zeros / total - amount) < 0.01, key
        # per layer: every pruned weight had a magnitude <= every kept one in that layer
        orig, kept = before[key].abs(), w != 0
        assert orig[~kept].max() <= orig[kept].min()


def test_global_scope_is_global_not_per_layer(original):
    """One threshold over all layers: layer sparsities differ, unlike scope='layer'."""
    _, model, _ = original
    _, report = prune_unstructured(model, PruneConfig(0.5))
    per_layer = [z / t for z, t in report.layers.values()]
    assert max(per_layer) - min(per_layer) > 0.05


def test_ignored_layers_and_included_head(original):
    name, model, before = original
    pruned, report = prune_unstructured(model, PruneConfig(0.5, ignore=["model.0", "model.1"]))
    for key in before:
        if key.startswith(("model.0.", "model.1.")):
            assert torch.equal(pruned.state_dict()[key], before[key]), key
            assert key not in report.layers
    assert report.layers and abs(report.overall - 0.5) < 0.01

    pruned, report = prune_unstructured(model, PruneConfig(0.5, include_head=True))
    head = pruned.get_parameter(HEADS[name])
    assert HEADS[name] in report.layers and report.layers[HEADS[name]][0] == int((head == 0).sum()) > 0


def test_ignore_matches_whole_name_components():
    """'model.1' keeps model.1 dense but not model.10; a weight's own name works as well."""
    torch.manual_seed(0)
    model = nn.Module()
    model.model = nn.Sequential(*(nn.Conv2d(4, 4, 3) for _ in range(11)), nn.Flatten(), nn.Linear(4, 3))
    pruned, report = prune_unstructured(model, PruneConfig(0.5, ignore=["model.1", "model.2.weight"]))
    assert "model.1.weight" not in report.layers and "model.2.weight" not in report.layers
    assert "model.10.weight" in report.layers and report.layers["model.10.weight"][0] > 0
    assert torch.equal(pruned.model[1].weight, model.model[1].weight)
    assert "model.12.weight" not in report.layers  # the head: the last Linear when there is no num_classes
    with pytest.raises(ConfigError, match="no module named 'model.99'"):
        prune_unstructured(model, PruneConfig(0.5, ignore=["model.99"]))


def test_result_is_plain_tensors_and_runs(original):
    _, model, before = original
    pruned, _ = prune_unstructured(model, PruneConfig(0.5))
    assert list(pruned.state_dict()) == list(before)  # no weight_orig / weight_mask left behind
    assert all(type(p) is nn.Parameter for p in pruned.parameters())
    assert not any(m._forward_pre_hooks for m in pruned.modules())
    with torch.no_grad():
        y = pruned.eval()(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_amount_zero_is_a_no_op(original):
    _, model, before = original
    pruned, report = prune_unstructured(model, PruneConfig(0.0))
    assert pruned is not model
    assert all(torch.equal(v, before[k]) for k, v in pruned.state_dict().items())
    assert report.zeros == 0 and report.overall == 0.0


def test_ties_are_broken_so_the_count_is_exact():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)  # every magnitude equal
    pruned, report = prune_unstructured(model, PruneConfig(0.37))
    assert report.zeros == round(0.37 * report.total)
    again, _ = prune_unstructured(model, PruneConfig(0.37))
    assert all(torch.equal(a, b) for a, b in zip(pruned.parameters(), again.parameters(), strict=True))
    _, report = prune_unstructured(model, PruneConfig(0.37, scope="layer"))
    assert all(z == round(0.37 * t) for z, t in report.layers.values())


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, math.nan, True, "0.3"])
def test_amount_outside_0_1_is_a_config_error(amount):
    with pytest.raises(ConfigError, match="amount"):
        PruneConfig(amount)


def test_bad_scope_ignore_and_mutated_config_are_config_errors():
    with pytest.raises(ConfigError, match="scope"):
        PruneConfig(0.3, scope="network")
    with pytest.raises(ConfigError, match="ignore"):
        PruneConfig(0.3, ignore=[1])
    assert PruneConfig(0.3, ignore="model.0").ignore == ["model.0"]
    assert PruneConfig(0.3, ignore=None).ignore == []
    config = PruneConfig(0.3)
    config.amount = 1.0
    with pytest.raises(ConfigError, match="amount"):
        prune_unstructured(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)), config)


def test_nothing_prunable_is_an_error():
    with pytest.raises(OptkitError, match="nothing to prune"):
        prune_unstructured(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()), PruneConfig(0.5))
    head_only = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(OptkitError, match="nothing to prune"):
        prune_unstructured(head_only, PruneConfig(0.5))
    model = create_model("test-tiny", num_classes=3)
    with pytest.raises(OptkitError, match="nothing to prune"):
        prune_unstructured(model, PruneConfig(0.5, ignore=["model"]))


def test_masks_keep_pruned_weights_at_zero_through_optimizer_steps():
    torch.manual_seed(0)
    model, report = prune_unstructured(create_model("test-tiny", num_classes=3), PruneConfig(0.6))
    entry = sparsity_transform(report)
    masks = sparsity_masks(model, entry)
    assert set(masks) == set(report.layers) and all(m.dtype == torch.bool for m in masks.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        assert measure_sparsity(model, masks).zeros < report.zeros  # the step revives pruned weights ...
        apply_masks_(model, masks)
        after = measure_sparsity(model, masks)  # ... and the masks put them back
        assert after.zeros == report.zeros
        for name, mask in masks.items():
            w = model.get_parameter(name)
            assert torch.equal(w != 0, mask) and not torch.signbit(w[~mask]).any()  # +0.0, not -0.0


def test_transform_entry_replay_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model, report = prune_unstructured(
        create_model("test-tiny", num_classes=3), PruneConfig(0.5, scope="layer")
    )
    entry = sparsity_transform(report)
    assert entry["kind"] == "sparsity" and entry["params"] == list(report.layers)
    assert entry["amount"] == 0.5 and entry["scope"] == "layer" and abs(entry["sparsity"] - 0.5) < 0.01
    assert json.loads(json.dumps(entry)) == entry  # plain types only
    assert json.loads(json.dumps(report.as_dict()))["layers"]
    by_names = sparsity_transform(list(report.layers), amount=0.5, scope="layer")
    assert by_names["params"] == entry["params"] and by_names["amount"] == 0.5
    assert replay(model, entry) is model and replay_transform(model, entry) is model
    with pytest.raises(CheckpointError, match="no weight named"):
        replay(model, {"kind": "sparsity", "params": ["model.0.nothing.weight"]})

    ckpt = checkpoint_from_model(model, ["a", "b", "c"], imgsz=32, transforms=[entry])
    rebuilt = build_model(load_checkpoint(save_checkpoint(ckpt, tmp_path / "pruned.pt")))
    assert measure_sparsity(rebuilt, entry["params"]).zeros == report.zeros
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt(x))
