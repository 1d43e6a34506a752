"""Checkpoints users already have keep loading: files written by an earlier optkit (tests/fixtures/
checkpoints, made by its make.py before the transform registry) rebuild through today's replay to the
outputs that optkit computed for them (outputs.pt)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optkit.errors import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
EXPECTED_TRANSFORMS = {  # file -> the transform kinds it carries, in order
    "plain.pt": [],
    "last.pt": [],
    "fused.pt": ["fuse"],
    "pruned-structured.pt": ["prune-structured"],
    "pruned-unstructured.pt": ["sparsity"],
    "stripped-half.pt": ["sparsity"],
    "int8.pt": ["fuse", "quantize"],
    "int8-relu.pt": ["fuse", "quantize"],
    "qat.pt": ["fuse", "quantize"],
}


def _fixed_input() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # as make.py


def check_rebuilds_to_recorded_outputs(name: str) -> None:
    """The fixture `name` loads, carries the transforms it was written with, and rebuilds to the
    outputs recorded for it (the core of this file; a broken replay must fail it: see below)."""
    from optkit.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(FIXTURES / name)
    assert [t["kind"] for t in ckpt.transforms] == EXPECTED_TRANSFORMS[name]
    assert all("version" not in t for t in ckpt.transforms)  # written before versions: read as 1
    model = build_model(ckpt).eval()
    with torch.no_grad():
        got = model(_fixed_input())
    expected = torch.load(FIXTURES / "outputs.pt", weights_only=True)[name]
    # made with 1 thread; other thread counts may sum convolutions in another order (float rounding)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED_TRANSFORMS))
def test_old_checkpoint_rebuilds_to_its_recorded_outputs(name):
    check_rebuilds_to_recorded_outputs(name)


def _quantizers_off(replay):
    def broken(model, entry):  # the right structure and buffers, but computing in float
        from optkit.quant.quantizers import quantizers

        model = replay(model, entry)
        for q in quantizers(model).values():
            q.disable()
        return model

    return broken


def _skipped(replay):
    return lambda model, entry: model  # the structure is never changed


@pytest.mark.parametrize(
    "name, kind, breaking, failure, match",
    [
        ("int8.pt", "quantize", _quantizers_off, AssertionError, "not close"),  # loads; outputs differ
        ("qat.pt", "quantize", _quantizers_off, AssertionError, "not close"),
        ("fused.pt", "fuse", _skipped, CheckpointError, "do not fit"),  # the weights no longer fit
        ("pruned-structured.pt", "prune-structured", _skipped, CheckpointError, "do not fit"),
    ],
)
def test_a_broken_replay_fails_the_fixture_check(monkeypatch, name, kind, breaking, failure, match):
    """The fixture check can fail: with one replay broken through the registry, the file no longer
    rebuilds to its recorded outputs."""
    import dataclasses

    from optkit import transforms

    spec = transforms.get_transform(kind)
    monkeypatch.setitem(transforms._REGISTRY, kind, dataclasses.replace(spec, replay=breaking(spec.replay)))
    with pytest.raises(failure, match=match):
        check_rebuilds_to_recorded_outputs(name)


def test_the_act_swap_of_an_old_int8_checkpoint_is_replayed():
    from optkit.checkpoint import build_model, load_checkpoint

    model = build_model(load_checkpoint(FIXTURES / "int8-relu.pt"))
    acts = {type(m).__name__ for m in model.modules()}
    assert "ReLU" in acts and "SiLU" not in acts


def test_the_old_last_pt_still_resumes_its_training_state():
    from optkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(FIXTURES / "last.pt")
    assert ckpt.optimizer is not None and ckpt.ema is not None and ckpt.train_args["model"] == "test-tiny"
