"""Structured pruning: channels really go (params and FLOPs drop), the head and ignored layers keep
theirs, and the recorded history rebuilds the same model from plain data."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.errors import ConfigError, OptkitError
from optkit.measure.flops import count_flops, count_params
from optkit.models import create_model
from optkit.models.parts import output_layers
from optkit.stages.prune_structured import (
    StructuredPruneConfig,
    prunable_weight_count,
    prune_structured,
    replay,
)

NUM_CLASSES = 5
# (model, imgsz, round_to): the tiny models exercise C3 concat + residual add, BasicBlock shortcuts and
# concat-of-branches outputs; yolo-cls-n is a real family at a small size.
CASES = [
    ("test-tiny", 32, 8),
    ("test-tiny", 32, 1),
    ("test-resnet", 32, 8),
    ("test-resnet", 32, 1),
    ("test-concat", 64, 8),
    ("test-concat", 64, 1),
    ("yolo-cls-n", 32, 8),
]


def _convs(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-r{c[2]}")
def pruned_case(request):
    name, imgsz, round_to = request.param
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    config = StructuredPruneConfig(amount=0.3, round_to=round_to, imgsz=imgsz)
    pruned, entry = prune_structured(model, config)
    return name, imgsz, round_to, model, pruned, entry


def test_pruned_model_is_smaller_and_keeps_its_head(pruned_case):
    name, imgsz, round_to, model, pruned, entry = pruned_case
    x = torch.randn(2, 3, imgsz, imgsz)
    with torch.no_grad():
        assert pruned(x).shape == (2, NUM_CLASSES)
    assert count_params(pruned) < count_params(model)
    assert count_flops(pruned, imgsz) < count_flops(model, imgsz)
    (head,) = output_layers(pruned)
    assert head.out_features == NUM_CLASSES
    before, after = _convs(model), _convs(pruned)
    changed = [n for n in before if after[n] != before[n]]
    assert changed, name
    assert all(after[n] < before[n] and after[n] % round_to == 0 for n in changed), {
        n: (before[n], after[n]) for n in changed
    }
    assert _convs(create_model(name, num_classes=NUM_CLASSES)) == before  # the input model is untouched


def test_achieved_figures_match_the_models(pruned_case):
    _, _, _, model, pruned, entry = pruned_case
    got = entry["achieved"]
    assert got["prunable_weights_before"] == prunable_weight_count(model)
    assert got["prunable_weights_after"] == prunable_weight_count(pruned)
    assert 0 < got["prunable_weight_reduction"] < 1
    assert 0 < got["channel_reduction"] < 1
    assert got["params_after"] == count_params(pruned)
    assert entry["kind"] == "prune-structured" and entry["amount"] == 0.3


def test_replay_on_a_fresh_model_rebuilds_the_pruned_one(pruned_case):
    name, imgsz, _, _, pruned, entry = pruned_case
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain data only
    assert loaded == entry

    torch.manual_seed(123)  # different random weights: only the structure may carry over
    fresh = replay(create_model(name, num_classes=NUM_CLASSES), loaded)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn(2, 3, imgsz, imgsz)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned(x))


def test_checkpoint_with_pruning_transform_rebuilds(tmp_path):
    torch.manual_seed(0)
    model = create_model("test-concat", num_classes=3).eval()
    pruned, entry = prune_structured(model, StructuredPruneConfig(amount=0.3, imgsz=32))
    ckpt = checkpoint_from_model(pruned, ["a", "b", "c"], imgsz=32, transforms=[entry])
    path = save_checkpoint(ckpt, tmp_path / "pruned.pt")
    with torch.inference_mode():  # the rebuild must also work where the caller turned autograd off
        rebuilt = build_model(load_checkpoint(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn-scale"])
def test_importance_removes_dead_channels_first(importance):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=NUM_CLASSES).eval()
    layer = model.model[1]  # Conv 8 -> 16; 16 * 0.7 rounds down to 8 channels kept
    dead = torch.arange(0, 16, 2)
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.weight[dead] = 0.0
        layer.bn.bias[dead] = 0.0
        layer.conv.weight[dead] = 0.0
    pruned, entry = prune_structured(
        model, StructuredPruneConfig(amount=0.3, importance=importance, imgsz=32)
    )
    assert entry["importance"] == importance
    kept = pruned.model[1].bn.weight
    assert kept.numel() == 8 and (kept > 0).all()  # exactly the zeroed channels went


def test_ignore_keeps_named_layers_channels():
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=NUM_CLASSES).eval()
    config = StructuredPruneConfig(amount=0.3, round_to=1, ignore=["model.1", "model.2.cv3"], imgsz=32)
    pruned, _ = prune_structured(model, config)
    before, after = _convs(model), _convs(pruned)
    for name in ("model.1.conv", "model.2.cv3.conv"):
        assert after[name] == before[name]
    assert after["model.3.conv"] < before["model.3.conv"]  # the rest is pruned


def test_global_pruning_runs():
    torch.manual_seed(0)
    model = create_model("test-resnet", num_classes=NUM_CLASSES).eval()
    pruned, _ = prune_structured(model, StructuredPruneConfig(amount=0.3, global_pruning=True, imgsz=32))
    assert count_params(pruned) < count_params(model)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": 1.0},
        {"amount": -0.1},
        {"amount": True},
        {"amount": "0.3"},
        {"amount": 0.3, "importance": "taylor"},
        {"amount": 0.3, "round_to": 0},
    ],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        StructuredPruneConfig(**kwargs)


def test_unknown_ignore_name_is_a_config_error():
    model = create_model("test-tiny", num_classes=NUM_CLASSES)
    with pytest.raises(ConfigError, match="model.99"):
        prune_structured(model, StructuredPruneConfig(amount=0.3, ignore=["model.99"], imgsz=32))


def test_pruning_nothing_is_an_error():
    model = create_model("test-tiny", num_classes=NUM_CLASSES)
    with pytest.raises(OptkitError, match="no channels"):
        prune_structured(model, StructuredPruneConfig(amount=0.0, imgsz=32))


@pytest.mark.parametrize("name, imgsz, round_to", [("test-det", 64, 4), ("yolo-det-n", 64, 8)])
def test_a_detector_keeps_its_head_outputs_and_c2f_splits(name, imgsz, round_to):
    """The Detect head's output convs (4 x 16 DFL bins, nc classes) and each C2f's split cv1 keep their
    output channels; everything else may shrink, the decoded output keeps its layout, and replay
    rebuilds the pruned model."""
    from optkit.models.detect_blocks import C2f
    from optkit.models.parts import output_layer_names

    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    config = StructuredPruneConfig(amount=0.3, round_to=round_to, imgsz=imgsz)
    pruned, entry = prune_structured(model, config)
    before, after = _convs(model), _convs(pruned)
    kept = list(output_layer_names(model))
    kept += [f"{n}.cv1.conv" for n, m in model.named_modules() if isinstance(m, C2f)]
    assert {n: after[n] for n in kept} == {n: before[n] for n in kept}
    assert [before[n] for n in output_layer_names(model)] == [64] * 3 + [NUM_CLASSES] * 3
    assert [n for n in before if after[n] < before[n]]  # channels went elsewhere
    assert count_flops(pruned, imgsz) < count_flops(model, imgsz)
    x = torch.randn(2, 3, imgsz, imgsz)
    cells = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape == (2, 4 + NUM_CLASSES, cells)
    fresh = replay(create_model(name, num_classes=NUM_CLASSES), entry)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned(x))


def test_c2f_blocks_trace_with_the_same_outputs_and_get_their_forward_back():
    """While the graph is traced, C2f blocks run a sliced forward (Torch-Pruning cannot map a split
    whose half feeds several layers); it must compute what the block computes, and go away after."""
    from optkit.models.detect_blocks import C2f
    from optkit.stages.prune_structured import _traceable_splits

    torch.manual_seed(0)
    model = create_model("test-det", num_classes=NUM_CLASSES).eval()
    blocks = [m for m in model.modules() if isinstance(m, C2f)]
    assert blocks and any(b.m[0].add for b in blocks)  # residual bottlenecks (the half feeds an add too)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        with _traceable_splits(model):
            assert all("forward" in vars(b) for b in blocks)
            traced = model(x)
    assert torch.equal(traced, expected)
    assert not any("forward" in vars(b) for b in blocks)
