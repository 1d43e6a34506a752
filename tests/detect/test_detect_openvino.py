"""`optkit export --format openvino` (issue 16) on detectors, fp32 and INT8: an IR folder checked against
the ONNX graph, runnable by benchmark and profile, nothing written when it cannot be made."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("openvino", reason="the openvino extra (pip install 'optkit[openvino]')")

from optkit.checkpoint import build_model, load_checkpoint  # noqa: E402
from optkit.ovrt import OvModel  # noqa: E402

IMGSZ = 64


@pytest.fixture
def cli(cli_process):
    """OpenVINO commands run as processes of their own (see tests/test_ovrt.py's cli fixture)."""
    return cli_process


def test_fp32_ir_of_a_detector_matches_pytorch(cli, tmp_path, det_data, learned_det):
    folder = tmp_path / "det_openvino"
    result = cli("export", learned_det, "--format", "openvino", "-o", folder, "--data", det_data, "--json")
    assert result.code == 0, result.err
    r = result.json()
    assert r["format"] == "openvino" and r["output"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["det_openvino.bin", "det_openvino.xml"]
    assert not list(tmp_path.glob(".*"))  # no staging folder or ONNX file left behind
    assert r["openvino"]["max_rel"] <= r["openvino"]["atol"]
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    model = build_model(load_checkpoint(learned_det)).eval()
    with torch.no_grad():
        expected = model(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
    got = OvModel(folder, threads=1, precision="f32")(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert OvModel(folder, threads=1).metadata["task"] == "detect"


@pytest.mark.slow
def test_int8_ir_of_a_detector_runs_its_convolutions_in_8_bits(cli, tmp_path, int8_det):
    folder = tmp_path / "int8_openvino"
    result = cli("export", int8_det, "--format", "openvino", "-o", folder, "--json")
    assert result.code == 0, result.err
    r = result.json()
    assert r["int8"]["target"] == "openvino"  # standard Q/DQ pairs laid out for OpenVINO
    ir = r["openvino"]
    assert ir["convs"] and ir["int8_convs"] >= ir["convs"] // 2
    bench = cli("benchmark", folder, "--rounds", "1", "--runs", "2", "--warmup", "1", "--json")
    assert bench.code == 0, bench.err
    assert bench.json()["rows"][0]["format"].startswith("openvino int8")


def test_openvino_export_refusals_write_nothing(cli, tmp_path, learned_det):
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused = cli("export", learned_det, "--format", "openvino", "-o", afile)
    assert refused.code == 1 and "is a file" in refused.err and afile.read_text() == "x"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    refused = cli("export", learned_det, "--format", "openvino", "-o", other)
    assert refused.code == 1 and "holds other files" in refused.err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    wrong = cli("export", learned_det, "--format", "tflite")
    assert wrong.code == 1 and "--format must be one of onnx, openvino" in wrong.err


def test_val_of_the_ir_equals_val_of_the_onnx(cli, tmp_path, det_data, learned_det):
    """The same detector as ONNX (ONNX Runtime) and as an IR (OpenVINO at f32): the same mAP; at the CPU's
    default precision it runs too and says which precision it was."""
    onnx, folder = tmp_path / "det.onnx", tmp_path / "det_openvino"
    assert cli("export", learned_det, "-o", onnx).code == 0
    assert cli("export", learned_det, "--format", "openvino", "-o", folder).code == 0
    by_ort = cli("val", onnx, "--data", det_data, "--json")
    by_ov = cli("val", folder, "--data", det_data, "--precision", "f32", "--json")
    assert by_ort.code == 0 and by_ov.code == 0, by_ov.err
    a, b = by_ort.json(), by_ov.json()
    assert b["runtime"] == "openvino (f32)" and a["runtime"] == "onnxruntime"
    assert a["map"] > 0.3 and abs(a["map"] - b["map"]) <= 0.002 and abs(a["map50"] - b["map50"]) <= 0.002
    default = cli("val", folder / "det_openvino.xml", "--data", det_data, "--json")
    assert default.code == 0 and default.json()["runtime"].startswith("openvino (")
    refused = cli("val", onnx, "--data", det_data, "--precision", "f32")
    assert refused.code == 1 and "OpenVINO IR only" in refused.err


def test_ir_with_nms_in_its_graph_detects_as_the_onnx_file(cli, tmp_path, det_data, learned_det):
    """`export --format openvino --nms`: OpenVINO converts the graph's ONNX NonMaxSuppression; the IR is
    checked against the ONNX file detection by detection on the builtin scenes, and `val` of it (NMS in
    its graph, read from its rt_info) gives the ONNX file's mAP."""
    onnx, folder = tmp_path / "nms.onnx", tmp_path / "nms_openvino"
    assert cli("export", learned_det, "--nms", "-o", onnx).code == 0
    result = cli("export", learned_det, "--format", "openvino", "--nms", "-o", folder, "--json")
    assert result.code == 0, result.err
    r = result.json()
    assert r["nms_check"]["matched"] == r["nms_check"]["detections"] > 0
    ir = r["openvino"]
    assert ir["max_rel"] <= ir["atol"]
    assert any(i.startswith("builtin:shapes-det scenes") for i in ir["inputs"])
    by_ort = cli("val", onnx, "--data", det_data, "--json")
    by_ov = cli("val", folder, "--data", det_data, "--precision", "f32", "--json")
    assert by_ort.code == 0 and by_ov.code == 0, by_ov.err
    a, b = by_ort.json(), by_ov.json()
    assert a["nms_in_graph"] == b["nms_in_graph"] and a["map"] > 0.3
    assert abs(a["map"] - b["map"]) <= 0.002 and abs(a["map50"] - b["map50"]) <= 0.002
