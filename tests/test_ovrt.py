"""optkit.ovrt: an IR written from optkit's ONNX runs in OpenVINO with the ONNX model's outputs, carries
optkit's metadata, and bad paths or a missing extra end in one line."""

from __future__ import annotations

import sys

import pytest
import torch

from optkit.errors import ConfigError
from optkit.onnxrt import OrtModel, read_metadata

openvino = pytest.importorskip("openvino", reason="the openvino extra (pip install 'optkit[openvino]')")

from optkit.ovrt import IrFileError, OvModel, find_ir, is_ir, openvino_module, read_ir, write_ir  # noqa: E402


@pytest.fixture
def cli(cli_process):
    """OpenVINO commands run as processes of their own: OpenVINO's threads left in the test process made
    a later test that sends itself SIGINT (tests/train/test_interrupt_latch.py) crash with SIGSEGV."""
    return cli_process


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """A tiny classifier and a tiny detector exported by optkit (dynamic batch and size)."""
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.cli.app import main
    from optkit.models import create_model

    folder = tmp_path_factory.mktemp("ov")
    files = {}
    for name, imgsz in (("test-tiny", 32), ("test-det", 64)):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3).eval()
        pt = save_checkpoint(checkpoint_from_model(model, ["a", "b", "c"], imgsz), folder / f"{name}.pt")
        files[name] = folder / f"{name}.onnx"
        assert main(["export", str(pt), "--dynamic", "-o", str(files[name])]) == 0
    return files


@pytest.mark.parametrize("name", ["test-tiny", "test-det"])
def test_ir_runs_like_the_onnx_model_and_keeps_the_metadata(onnx_file, tmp_path, name):
    xml = write_ir(onnx_file[name], tmp_path / "model_openvino", read_metadata(onnx_file[name]))
    assert xml == tmp_path / "model_openvino" / "model_openvino.xml" and xml.with_suffix(".bin").is_file()
    assert is_ir(tmp_path / "model_openvino") and is_ir(xml) and not is_ir(onnx_file[name])
    _, meta = read_ir(tmp_path / "model_openvino")
    assert meta == read_metadata(onnx_file[name])  # names and preprocess decoded, imgsz an int
    imgsz = meta["imgsz"]
    x = torch.rand(3, 3, imgsz, imgsz)
    expected = OrtModel(onnx_file[name])(x)
    got = OvModel(xml, threads=1, precision="f32")(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_find_ir_names_what_is_wrong(tmp_path):
    with pytest.raises(IrFileError, match="no such file"):
        find_ir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IrFileError, match="found 0"):
        find_ir(tmp_path / "empty")
    two = tmp_path / "two"
    two.mkdir()
    for stem in ("a", "b"):
        (two / f"{stem}.xml").write_text("<net/>")
    with pytest.raises(IrFileError, match="found 2"):
        find_ir(two)
    (tmp_path / "lone.xml").write_text("<net/>")
    with pytest.raises(IrFileError, match="lone.bin is missing"):
        find_ir(tmp_path / "lone.xml")


def test_a_broken_ir_is_one_line(tmp_path):
    (tmp_path / "bad.xml").write_text("not xml at all")
    (tmp_path / "bad.bin").write_bytes(b"\0" * 8)
    with pytest.raises(IrFileError, match="OpenVINO cannot read it"):
        read_ir(tmp_path / "bad.xml")


def test_without_the_extra_the_message_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'optkit\[openvino\]'"):
        openvino_module()


def test_benchmark_times_an_ir_beside_its_onnx(onnx_file, tmp_path, cli):
    """`optkit benchmark` takes an IR folder: its row says OpenVINO and the precision it runs in, its
    size is the .xml and .bin together, its parameters about the ONNX model's (OpenVINO folds the
    BatchNorms the ONNX graph keeps)."""
    folder = tmp_path / "tiny_openvino"
    xml = write_ir(onnx_file["test-tiny"], folder, read_metadata(onnx_file["test-tiny"]))
    result = cli("benchmark", str(onnx_file["test-tiny"]), str(folder), "--rounds", "1", "--runs", "2",
                 "--warmup", "1", "--json")  # fmt: skip
    assert result.code == 0, result.err
    onnx_row, ir_row = result.json()["rows"]
    assert ir_row["format"].startswith("openvino (") and onnx_row["format"] == "onnx"
    assert ir_row["file_bytes"] == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    assert 0.95 <= ir_row["params"] / onnx_row["params"] <= 1.0
    assert ir_row["latency_ms"] > 0


def test_profile_measures_an_ir_with_its_precision(onnx_file, tmp_path, cli):
    """`optkit profile IR --precision f32 --per-layer`: OpenVINO's backend and precision, the FLOPs of the
    ONNX model it came from, per-node times with the convolutions' FLOPs; --precision refused elsewhere."""
    folder = tmp_path / "det_openvino"
    write_ir(onnx_file["test-det"], folder, read_metadata(onnx_file["test-det"]))
    ir = cli("profile", str(folder), "--imgsz", "96", "--runs", "3", "--warmup", "1", "--per-layer",
             "--top", "200", "--precision", "f32", "--json")  # fmt: skip
    assert ir.code == 0, ir.err
    r = ir.json()
    assert r["backend"] == "openvino" and "f32" in r["device"] and r["source_kind"] == "openvino"
    onnx = cli(
        "profile", str(onnx_file["test-det"]), "--imgsz", "96", "--runs", "3", "--warmup", "1", "--json"
    )
    assert onnx.code == 0, onnx.err
    assert abs(r["gflops"] / onnx.json()["gflops"] - 1) < 0.01
    rows = r["per_layer"]["rows"]
    assert rows and any(row["gflops"] for row in rows if "Convolution" in row["type"])
    refused = cli("profile", str(onnx_file["test-det"]), "--precision", "f32")
    assert refused.code == 1 and "OpenVINO IR only" in refused.err
