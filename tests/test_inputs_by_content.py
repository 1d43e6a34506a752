"""A model file is what its bytes say, not what its name says (optkit.formats.model_format): a checkpoint
renamed .onnx is read as a checkpoint, an ONNX model renamed .pt as ONNX, by every command that reads
model files; what a command cannot use is refused with a message that says what the file really is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

NAMES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint and its real ONNX export, each also under the other's suffix."""
    from image_folders import write_image_folder

    from optkit.checkpoint import checkpoint_from_model, load_checkpoint, save_checkpoint
    from optkit.models import create_model
    from optkit.stages.export import ExportConfig, export_checkpoint

    root = tmp_path_factory.mktemp("by-content")
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3)
    ckpt = save_checkpoint(checkpoint_from_model(model, NAMES, 32), root / "m.pt")
    onnx_path = root / "m.onnx"
    export_checkpoint(load_checkpoint(ckpt), onnx_path, ExportConfig(imgsz=32, simplify=False))
    shutil.copy(ckpt, root / "ckpt-named.onnx")
    shutil.copy(onnx_path, root / "onnx-named.pt")
    return {
        "ckpt": ckpt,
        "onnx": onnx_path,
        "ckpt-named.onnx": root / "ckpt-named.onnx",
        "onnx-named.pt": root / "onnx-named.pt",
        "data": write_image_folder(root / "colors", NAMES, per_class=4),
    }


def test_model_format_reads_the_bytes(files, tmp_path):
    from optkit.formats import model_format

    assert model_format(files["ckpt"]) == model_format(files["ckpt-named.onnx"]) == "torch"
    assert model_format(files["onnx"]) == model_format(files["onnx-named.pt"]) == "onnx"
    legacy = tmp_path / "legacy.bin"  # torch.save's pre-1.6 format: a bare pickle stream
    torch.save({"w": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    assert model_format(legacy) == "torch"
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.pt").write_text("epoch,top1\n")
    assert model_format(tmp_path / "empty.onnx") == "onnx"  # nothing to read: the name decides
    assert model_format(tmp_path / "text.pt") == "torch"
    assert model_format(tmp_path / "missing.onnx") == "onnx" and model_format(tmp_path / "x.txt") is None


@pytest.mark.parametrize("name", ["ckpt-named.onnx", "onnx-named.pt"])
@pytest.mark.parametrize("command", ["val", "profile", "benchmark"])
def test_readers_of_both_formats_go_by_content(cli, files, command, name):
    args = {
        "val": ["val", files[name], "--data", files["data"], "--workers", "0", "--json"],
        "profile": ["profile", files[name], "--runs", "1", "--warmup", "0", "--json"],
        "benchmark": ["benchmark", files[name], "--runs", "1", "--warmup", "0", "--json"],
    }[command]
    r = cli(*args)
    assert r.code == 0, r.err
    out = r.json()
    expected = "onnx" if name == "onnx-named.pt" else "pytorch"
    if command == "profile":
        assert out["backend"] == ("onnxruntime" if expected == "onnx" else "pytorch")
    elif command == "benchmark":
        assert out["rows"][0]["format"] == expected
    else:
        assert out["top1"] is not None


def test_checkpoint_named_onnx_is_a_checkpoint_for_stage_commands(cli, files, tmp_path):
    r = cli("fuse", files["ckpt-named.onnx"], "-o", tmp_path / "fused.pt")
    assert r.code == 0 and (tmp_path / "fused.pt").is_file(), r.err
    r = cli("export", files["ckpt-named.onnx"])  # the default output would be the input itself
    assert r.code == 1 and "give -o" in r.err and "checkpoint named .onnx" in r.err, r.err
    r = cli("export", files["ckpt-named.onnx"], "-o", tmp_path / "out.onnx", "--no-simplify")
    assert r.code == 0, r.err


@pytest.mark.parametrize("command", ["fuse", "info", "strip", "export"])
def test_onnx_named_pt_is_refused_as_onnx(cli, files, command):
    r = cli(command, files["onnx-named.pt"])
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1, r.err
    assert "is an ONNX model, not a PyTorch checkpoint" in lines[0], lines[0]
