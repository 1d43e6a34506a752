"""fuse: BN folded into conv/linear, outputs unchanged within tolerance, replayable from a checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.checkpoint import build_model, checkpoint_from_model
from optkit.errors import CheckpointError, OptkitError
from optkit.models import create_model, list_models
from optkit.models.blocks import Conv
from optkit.stages import fuse as fuse_module
from optkit.stages.fuse import FuseConfig, FuseError, fuse, fuse_, replay

ALL_MODELS = list_models(include_test=True)
BIG_MODELS = set(list_models())
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
TOL = 1e-4  # max |Δ| relative to max |output|, the stage's default


def _randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a wrong fold shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BN_TYPES):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def _bns(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, BN_TYPES)]


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)


@pytest.fixture(scope="module", params=ALL_MODELS)
def zoo(request):
    """(name, imgsz, original model, its state before fusing, fused model, report) for each registry model."""
    name = request.param
    torch.manual_seed(0)
    model = _randomize_bn(create_model(name, num_classes=5))
    before = _snapshot(model)
    imgsz = 32 if name in BIG_MODELS else 64  # pixels
    fused, report = fuse(model, FuseConfig(imgsz=imgsz))
    return name, imgsz, model, before, fused, report


def test_zoo_fused_matches_original(zoo):
    name, imgsz, model, _, fused, report = zoo
    assert report.fused and len(report.fused) == len(_bns(model))
    assert report.bn_left == {} and report.untraced == {} and report.fallback == {}
    assert report.max_abs is not None and 0 <= report.max_rel <= TOL
    assert _bns(fused) == [] and not fused.training
    # No BN call anywhere in the fused model's graph (so none after a conv either).
    graph = torch.fx.symbolic_trace(fused).graph
    modules = dict(fused.named_modules())
    assert not [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], BN_TYPES)]
    x = torch.randn(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(7))  # not the check's input
    with torch.no_grad():
        assert _rel_diff(model.eval()(x), fused(x)) <= TOL, name
    model.train()


def test_zoo_replay_rebuilds_fused_structure(zoo):
    name, imgsz, _, _, fused, report = zoo
    fresh = replay(create_model(name, num_classes=5), {"kind": "fuse", "fused": report.fused})
    fresh.load_state_dict(fused.state_dict(), strict=True)  # conv biases added, BN keys gone
    x = torch.randn(2, 3, imgsz, imgsz)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), fused(x))


def test_zoo_input_model_untouched(zoo):
    _, _, model, before, fused, _ = zoo
    assert _same_state(model, before) and model.training
    assert _bns(model) and fused is not model


def test_fuse_twice_is_a_no_op():
    model = _randomize_bn(create_model("test-tiny"))
    once, first = fuse(model, FuseConfig(imgsz=32))
    twice, second = fuse(once, FuseConfig(imgsz=32))
    assert first.fused and second.fused == [] and second.bn_left == {}
    assert second.max_abs == 0.0 and _same_state(twice, once.state_dict())


def test_checkpoint_rebuilds_fused_model():
    model = _randomize_bn(create_model("test-resnet", num_classes=3))
    fused, report = fuse(model, FuseConfig(imgsz=32))
    ckpt = checkpoint_from_model(fused, ["a", "b", "c"], 32, transforms=[{"kind": "fuse"}])
    rebuilt = build_model(ckpt)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), fused(x))
    assert "model.0.conv.bias" in ckpt.model and "model.0.bn.running_mean" not in ckpt.model


def test_replay_refuses_pairs_it_does_not_find():
    with pytest.raises(CheckpointError, match="does not replay"):
        replay(create_model("test-tiny"), {"kind": "fuse", "fused": ["model.0.conv + model.9.bn"]})


@pytest.mark.parametrize(
    "layers, shape",
    [
        # ConvTranspose2d with groups: output channels are dim 1 of the weight, per group.
        ([nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6), nn.ReLU()], (2, 4, 8, 8)),
        # Depthwise then grouped 1x1 conv, both without bias.
        (
            [
                nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                nn.BatchNorm2d(8),
                nn.Conv2d(8, 12, 1, groups=4, bias=False),
                nn.BatchNorm2d(12),
            ],
            (2, 8, 6, 6),
        ),
        ([nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4)], (3, 6)),
        (
            [
                nn.Conv1d(3, 4, 3),
                nn.BatchNorm1d(4),
                nn.Unflatten(2, (5, 1, 1)),
                nn.Conv3d(4, 2, 1),
                nn.BatchNorm3d(2),
            ],
            (2, 3, 7),
        ),
    ],
    ids=["conv-transpose-grouped", "depthwise-grouped", "linear-bn1d", "conv1d-conv3d"],
)
def test_layer_kinds(layers, shape):
    model = _randomize_bn(nn.Sequential(*layers))
    fused, report = fuse(model, FuseConfig(input_shape=shape))
    bns = _bns(model)
    assert [f.split(" + ")[1] for f in report.fused] == bns and report.bn_left == {}
    assert report.max_rel <= TOL
    assert all(isinstance(fused.get_submodule(name), nn.Identity) for name in bns)
    x = torch.randn(shape)
    with torch.no_grad():
        assert _rel_diff(model.eval()(x), fused(x)) <= TOL


class _SharedOutput(nn.Module):
    """The conv's output feeds the BN and the residual add, so folding would change the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _BnAfterAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Conv(4, 4, 3, act="relu")
        self.b = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x) + self.b(x))


def test_bn_that_cannot_fold_is_reported():
    shared, report = fuse(_randomize_bn(_SharedOutput()), FuseConfig(input_shape=(2, 4, 8, 8)))
    assert report.fused == [] and report.bn_left == {"bn": "conv output also used elsewhere"}
    assert isinstance(shared.bn, nn.BatchNorm2d)

    after_add, report = fuse(_randomize_bn(_BnAfterAdd()), FuseConfig(input_shape=(2, 4, 8, 8)))
    assert report.fused == ["a.conv + a.bn"]
    assert report.bn_left == {"bn": "input is not a conv output (add)"}
    assert isinstance(after_add.bn, nn.BatchNorm2d) and isinstance(after_add.a.bn, nn.Identity)

    batch_stats = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    _, report = fuse(batch_stats, FuseConfig(imgsz=8))
    assert report.fused == [] and "batch statistics" in report.bn_left["1"]


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.mean() > 0 else -x  # Python control flow on a tensor value: fx cannot trace it


class _Untraceable(nn.Module):
    """Untraceable at the top and inside `seq`; the Conv block and the Sequential's pair still fold."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 8, 3, 2)
        self.seq = nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), _DataDependent(), nn.BatchNorm2d(8))
        self.gate = _DataDependent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.gate(self.stem(x)))


def test_untraceable_model_falls_back():
    model = _randomize_bn(_Untraceable())
    fused, report = fuse(model, FuseConfig(imgsz=16))
    assert report.fused == ["stem.conv + stem.bn", "seq.0 + seq.1"]
    assert set(report.untraced) == {"<model>", "seq"}
    assert report.fallback == {
        "stem.conv + stem.bn": "fx graph of stem",
        "seq.0 + seq.1": "order of nn.Sequential seq",
    }
    assert report.bn_left == {"seq.3": "input is not a conv output (_DataDependent)"}
    assert report.max_rel <= TOL
    assert fuse_(_Untraceable()) == [("stem.conv", "stem.bn"), ("seq.0", "seq.1")]


def test_no_batchnorm_is_an_empty_report():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    fused, report = fuse(model, FuseConfig(imgsz=8))
    assert report.as_dict() == {
        "fused": [],
        "bn_left": {},
        "max_abs": 0.0,
        "max_rel": 0.0,
        "untraced": {},
        "fallback": {},
    }
    _, unchecked = fuse(model, FuseConfig(check=False))
    assert unchecked.max_abs is None and unchecked.max_rel is None


def test_tolerance_failure_raises_and_leaves_input_alone(monkeypatch):
    model = _randomize_bn(create_model("test-tiny"))
    before = _snapshot(model)
    fold = fuse_module._fold

    def broken_fold(layer: nn.Module, bn: nn.Module) -> None:
        fold(layer, bn)
        layer.bias.add_(0.05)  # a fold that is off by a constant

    monkeypatch.setattr(fuse_module, "_fold", broken_fold)
    with pytest.raises(FuseError, match=r"above atol=0\.0001") as info:
        fuse(model, FuseConfig(imgsz=32))
    assert isinstance(info.value, OptkitError) and "max |Δ|" in str(info.value)
    assert _same_state(model, before) and len(_bns(model)) == 16
    _, report = fuse(model, FuseConfig(imgsz=32, check=False))  # unchecked: the broken fold goes through
    assert report.max_abs is None and len(report.fused) == 16
