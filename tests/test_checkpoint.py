"""The checkpoint format: safe loading, atomic saving, exact rebuild, clear refusals."""

from __future__ import annotations

import io

import pytest
import torch

from optkit.checkpoint import (
    Checkpoint,
    build_model,
    checkpoint_from_model,
    load_checkpoint,
    save_checkpoint,
)
from optkit.errors import CheckpointError
from optkit.models import create_model


def _ckpt(name="test-tiny", **options) -> tuple[torch.nn.Module, Checkpoint]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options).eval()
    return model, checkpoint_from_model(model, ["a", "b", "c"], imgsz=32)


def test_saved_file_loads_with_weights_only_and_rebuilds_identically(tmp_path):
    model, ckpt = _ckpt(act="relu")
    ckpt.add_lineage("unit-test", {"path": tmp_path, "n": 3}, {"top1": torch.tensor(0.5)})
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)  # must not need any pickled class
    assert raw["format"] == "optkit-checkpoint/1"
    assert raw["lineage"][0]["metrics"]["top1"] == 0.5
    rebuilt = build_model(load_checkpoint(path))
    assert rebuilt.arch_options == {"act": "relu"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    _, ckpt = _ckpt()
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(ckpt, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


class _Marker:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_pickled_objects_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "foreign.pt"
    torch.save({"model": _Marker(marker), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"not a checkpoint at all" * 10), "not a PyTorch checkpoint"),
        (lambda p: torch.save({"conv.weight": torch.zeros(2)}, p), "plain state_dict"),
        (lambda p: torch.save([1, 2, 3], p), "holds a list"),
        (lambda p: torch.save({"format": "optkit-checkpoint/9", "x": 1}, p), "cannot read"),
    ],
    ids=["missing", "directory", "empty", "garbage", "state_dict", "list", "future-format"],
)
def test_bad_files_raise_checkpoint_error(tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    _, ckpt = _ckpt()
    data = io.BytesIO()
    torch.save(ckpt.to_dict(), data)
    path = tmp_path / "cut.pt"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_onnx_path_is_refused_with_reason(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    with pytest.raises(CheckpointError, match="ONNX model"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    _, ckpt = _ckpt()
    ckpt.arch["kwargs"] = {"act": "relu"}
    key = next(iter(ckpt.model))
    ckpt.model[key] = torch.zeros(1)
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model(load_checkpoint(path))


def test_unknown_transform_kind_is_refused(tmp_path):
    _, ckpt = _ckpt()
    ckpt.transforms = [{"kind": "teleport"}]
    with pytest.raises(CheckpointError, match="teleport"):
        build_model(ckpt)


def test_sparse_weights_are_stored_compactly_and_reload_bit_exact(tmp_path):
    from optkit.stages.prune import PruneConfig, prune_unstructured

    model, ckpt = _ckpt("resnet18")
    dense = save_checkpoint(ckpt, tmp_path / "dense.pt")
    pruned, _ = prune_unstructured(model, PruneConfig(amount=0.5))
    ckpt.model = {k: v.clone() for k, v in pruned.state_dict().items()}
    sparse = save_checkpoint(ckpt, tmp_path / "sparse.pt")
    assert sparse.stat().st_size <= 0.7 * dense.stat().st_size  # >= 30% smaller at 50% sparsity
    raw = torch.load(sparse, weights_only=True)
    assert any(isinstance(v, dict) for v in raw["model"].values())  # stored packed
    loaded = load_checkpoint(sparse).model
    for key, value in pruned.state_dict().items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype, key
