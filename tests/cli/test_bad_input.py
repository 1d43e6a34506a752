"""Bad-input rows for train / val / info: exit code, one line on stderr, nothing written."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def ckpt(tmp_path, tiny_data):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    model = create_model("test-tiny", num_classes=3)
    return save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), tmp_path / "m.pt")


def _assert_refused(r, code: int, *fragments: str):
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and r.out == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _bad_file(tmp_path, kind: str):
    path = tmp_path / "bad.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"hello world" * 20)
    elif kind == "foreign":
        torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, path)  # a pickled module, as YOLOv5 saves
    elif kind == "onnx":
        path = tmp_path / "model.onnx"
        path.write_bytes(b"\x08\x07")
    return path


BAD_FILES = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "empty",
    "garbage": "not a PyTorch checkpoint",
    "foreign": "pickled Python objects",
    "onnx": "is an ONNX model",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("command", ["val", "info", "train", "fuse", "prune", "strip"])
def test_bad_checkpoint_files(cli, tmp_path, tiny_data, monkeypatch, command, kind):
    monkeypatch.chdir(tmp_path)
    path = _bad_file(tmp_path, kind)
    before = path.read_bytes() if path.is_file() else None
    args = {
        "val": ("val", path, "--data", tiny_data),
        "info": ("info", path),
        "train": ("train", "--weights", path, "--data", tiny_data, "--epochs", "1"),
        "fuse": ("fuse", path),
        "prune": ("prune", path, "--amount", "0.3"),
        "strip": ("strip", path),
    }[command]
    expected = "not a valid ONNX model" if (command, kind) == ("val", "onnx") else BAD_FILES[kind]
    _assert_refused(cli(*args), 1, expected)  # val runs .onnx files, so a broken one is reported as such
    assert not (tmp_path / "runs").exists()
    assert (
        not list(tmp_path.glob("*-fused.pt"))
        + list(tmp_path.glob("*-pruned.pt"))
        + list(tmp_path.glob("*-stripped.pt"))
    )
    if before is not None:
        assert path.read_bytes() == before  # input untouched


def test_truncated_checkpoint(cli, ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    _assert_refused(cli("info", ckpt), 1, "truncated")


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (("--model", "yolo-nope"), 1, "known models: mobilenet-v2, resnet18, yolo-cls-n, yolo-cls-s"),
        (("--model", "test-tiny", "--imgsz", "50"), 1, "not a multiple of the model's stride 32"),
        (("--model", "test-tiny", "--imgsz", "100000"), 1, "--imgsz must be"),
        (("--model", "test-tiny", "--batch-size", "0"), 1, "--batch-size must be"),
        (("--model", "test-tiny", "--epochs", "0"), 1, "--epochs must be"),
        (("--model", "test-tiny", "--fraction", "1.5"), 1, "--fraction must be in (0, 1]"),
        (("--model", "test-tiny", "--optimizer", "Lion"), 1, "--optimizer must be one of"),
        (("--model", "test-tiny", "--act", "gelu"), 1, "act"),
        (("--model", "test-tiny", "--model-opt", "width=2"), 1, "unknown option 'width'"),
        (("--model", "test-tiny", "--device", "0"), 1, "CUDA"),
        (("--model", "test-tiny", "--epochs", "two"), 2, "Invalid value for '--epochs'"),
        ((), 1, "give --model NAME"),
    ],
    ids=[
        "unknown-model",
        "imgsz-stride",
        "imgsz-huge",
        "batch-0",
        "epochs-0",
        "fraction",
        "optimizer",
        "act",
        "model-opt",
        "cuda",
        "epochs-type",
        "nothing",
    ],
)
def test_train_bad_options(cli, tmp_path, tiny_data, monkeypatch, args, code, fragment):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    _assert_refused(
        cli("train", "--data", tiny_data, "--epochs", "1", *args)
        if "--epochs" not in args
        else cli("train", "--data", tiny_data, *args),
        code,
        fragment,
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["missing", "file", "no-classes", "no-images"])
def test_train_bad_dataset(cli, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    if kind == "file":
        root.write_text("x")
    elif kind == "no-classes":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
    elif kind == "no-images":
        (root / "train" / "cat").mkdir(parents=True)
        (root / "val" / "cat").mkdir(parents=True)
    r = cli("train", "--model", "test-tiny", "--data", root, "--epochs", "1")
    _assert_refused(r, 1, str(root))
    assert not (tmp_path / "runs").exists()


def test_val_class_mismatch(cli, ckpt, two_class_data):
    _assert_refused(cli("val", ckpt, "--data", two_class_data), 1, "classes do not match")


def test_val_bad_imgsz_and_batch(cli, ckpt, tiny_data):
    _assert_refused(cli("val", ckpt, "--data", tiny_data, "--imgsz", "40"), 1, "stride 32")
    _assert_refused(cli("val", ckpt, "--data", tiny_data, "--batch-size", "0"), 1, "--batch-size")


def test_val_cuda_without_cuda(cli, ckpt, tiny_data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _assert_refused(cli("val", ckpt, "--data", tiny_data, "--device", "cuda:0"), 1, "CUDA is not available")


def test_model_options_with_weights_are_refused(cli, ckpt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("train", "--weights", ckpt, "--act", "relu", "--data", tiny_data, "--epochs", "1")
    _assert_refused(r, 1, "apply to --model")
    assert not (tmp_path / "runs").exists()
