"""`optkit export` and `optkit val model.onnx` through the CLI: outputs, figures, bad input
(docs/architecture.md, bad input)."""

from __future__ import annotations

import onnx
import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model

CLASSES = ["blue", "green", "red"]


def _make_ckpt(folder):
    """A test-tiny checkpoint with non-trivial BatchNorm statistics, for the tiny_data classes."""
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32), folder / "m.pt")


@pytest.fixture
def ckpt(tmp_path):
    return _make_ckpt(tmp_path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, its default export m.onnx), shared read-only by the val tests."""
    from optkit.checkpoint import load_checkpoint
    from optkit.stages.export import ExportConfig, export_checkpoint

    pt = _make_ckpt(tmp_path_factory.mktemp("exported"))
    export_checkpoint(load_checkpoint(pt), pt.with_name("m.onnx"), ExportConfig(), source=pt)
    return pt, pt.with_name("m.onnx")


def _assert_refused(r, *fragments: str):
    assert r.code == 1, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and r.out == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _onnx_files(folder):
    return sorted(p.name for p in folder.rglob("*") if ".onnx" in p.name)  # outputs and temp files


def test_export_default_name_and_report(cli, ckpt):
    r = cli("export", ckpt, "--json")
    assert r.code == 0, r.err
    out = r.json()
    target = ckpt.with_name("m.onnx")
    assert out["output"] == str(target) and target.is_file()
    assert out["opset"] == 17 and out["dynamic"] is False and out["input_shape"] == [1, 3, 32, 32]
    assert out["simplified"] and out["nodes_after"] <= out["nodes_before"]
    assert out["size_mb"] == pytest.approx(target.stat().st_size / 1e6)
    assert out["checked"] and out["max_rel"] <= 1e-4 and out["top1_agreement"] == 1.0
    assert {
        "names",
        "imgsz",
        "stride",
        "task",
        "optkit_version",
        "source_sha256",
        "preprocess",
        "arch",
    } <= set(out["metadata"])
    assert onnx.load(target).opset_import[0].version == 17
    assert _onnx_files(ckpt.parent) == ["m.onnx"]  # no external-data side file, no temp file left


def test_export_table_and_options(cli, ckpt, tmp_path, tiny_data):
    target = tmp_path / "new" / "dir" / "x.onnx"  # missing folders are created
    r = cli("export", ckpt, "-o", target, "--dynamic", "--opset", "13", "--imgsz", "64", "--data", tiny_data)
    assert r.code == 0, r.err
    assert "onnxslim:" in r.out and "val images" in r.out and "random 4x3x64x64" in r.out
    assert "random 1x3x96x96" in r.out and target.is_file()
    model = onnx.load(target)
    assert model.opset_import[0].version == 13
    assert {p.key: p.value for p in model.metadata_props}["imgsz"] == "64"
    r = cli("export", ckpt, "-o", tmp_path / "y.onnx", "--no-simplify", "--no-check", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert not out["simplified"] and out["atol"] is None and out["cases"] == [] and out["max_abs"] is None


def test_export_data_parity_counts_images(cli, ckpt, tiny_data, tmp_path):
    r = cli("export", ckpt, "-o", tmp_path / "d.onnx", "--data", tiny_data, "--batch-size", "4", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["val_images"] == 18 and out["val_top1_agreement"] == 1.0  # 3 classes x 6 val images
    assert out["input_shape"] == [4, 3, 32, 32]


def test_failing_parity_writes_nothing(cli, ckpt, monkeypatch):
    from optkit.onnxrt import OrtModel

    run = OrtModel._run
    monkeypatch.setattr(OrtModel, "_run", lambda self, arr, names: [o + 0.01 for o in run(self, arr, names)])
    before = ckpt.read_bytes()
    _assert_refused(cli("export", ckpt), "differs from PyTorch's", "nothing written")
    assert _onnx_files(ckpt.parent) == [] and ckpt.read_bytes() == before


def test_val_onnx_matches_val_pt(cli, exported, tiny_data):
    pt, onnx_path = exported
    a = cli("val", pt, "--data", tiny_data, "--json", "--workers", "0")
    b = cli("val", onnx_path, "--data", tiny_data, "--json", "--batch-size", "5", "--workers", "0")
    assert a.code == 0 and b.code == 0, (a.err, b.err)
    a, b = a.json(), b.json()
    assert b["images"] == a["images"] == 18 and b["runtime"] == "onnxruntime" and b["imgsz"] == 32
    assert abs(a["top1"] - b["top1"]) * a["images"] <= 1  # within one image
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


BAD_EXPORT = {
    "missing": ((), "no such file"),
    "directory": ((), "is a directory"),
    "garbage": ((), "not a PyTorch checkpoint"),
    "onnx-input": ((), "is an ONNX model"),
    "opset-5": (("--opset", "5"), "--opset 5 is not supported: choose 11 to 20"),
    "opset-99": (("--opset", "99"), "--opset 99 is not supported"),
    "imgsz-50": (("--imgsz", "50"), "not a multiple of the model's stride 32"),
    "half-no-cuda": (("--half",), "CUDA is not available"),
    "o-directory": (("-o", "{dir}"), "is a directory"),
    "o-pt": (("-o", "{dir}/x.pt"), "ending in .onnx"),
    "atol-0": (("--atol", "0"), "--atol must be > 0"),
    "batch-0": (("--batch-size", "0"), "--batch-size must be an integer in [1, 1024]"),
    "data-no-check": (("--data", "{dir}", "--no-check"), "--no-check"),
    "data-classes": (("--data", "{two}"), "classes do not match"),
}


@pytest.mark.parametrize("kind", list(BAD_EXPORT))
def test_export_bad_input(cli, ckpt, tmp_path, request, kind):
    if kind == "half-no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args, fragment = BAD_EXPORT[kind]
    two = request.getfixturevalue("two_class_data") if kind == "data-classes" else None
    args = [a.format(dir=tmp_path, two=two) for a in args]
    source = {
        "missing": tmp_path / "nope.pt",
        "directory": tmp_path / "folder.pt",
        "garbage": tmp_path / "garbage.pt",
        "onnx-input": tmp_path / "model.onnx",
    }.get(kind, ckpt)
    if kind == "directory":
        source.mkdir()
    elif kind == "garbage":
        source.write_bytes(b"hello world" * 20)
    elif kind == "onnx-input":
        source.write_bytes(b"\x08\x07")
    before = source.read_bytes() if source.is_file() else None
    _assert_refused(cli("export", source, *args), fragment)
    assert _onnx_files(tmp_path) == (["model.onnx"] if kind == "onnx-input" else [])
    if before is not None:
        assert source.read_bytes() == before  # input untouched


def _strip_metadata(src, dst):
    model = onnx.load(src)
    del model.metadata_props[:]
    onnx.save(model, dst)


@pytest.mark.parametrize("kind", ["garbage", "empty", "no-metadata", "classes", "imgsz", "device"])
def test_val_onnx_bad_input(cli, exported, tmp_path, tiny_data, request, kind):
    path, data, extra = exported[1], tiny_data, ()
    if kind == "garbage":
        path = tmp_path / "bad.onnx"
        path.write_bytes(b"hello world" * 20)
        fragment = "is not a valid ONNX model"
    elif kind == "empty":
        path = tmp_path / "bad.onnx"
        path.write_bytes(b"")
        fragment = "empty"
    elif kind == "no-metadata":
        path = tmp_path / "plain.onnx"
        _strip_metadata(exported[1], path)
        fragment = "not exported by optkit (no class names in metadata)"
    elif kind == "classes":
        data, fragment = request.getfixturevalue("two_class_data"), "classes do not match the ONNX model's"
    elif kind == "imgsz":
        extra, fragment = ("--imgsz", "64"), "takes a fixed 32x32 input"
    else:
        extra, fragment = ("--device", "0"), "runs on ONNX Runtime's CPU provider"
    _assert_refused(cli("val", path, "--data", data, *extra), fragment)
