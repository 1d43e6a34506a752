"""`optkit benchmark`: one row per artifact (.pt and .onnx), CSV, plot, and refusals."""

from __future__ import annotations

import csv

import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model


@pytest.fixture
def artifacts(cli, tmp_path):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).eval()
    pt = save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), tmp_path / "m.pt")
    r = cli("export", pt, "-o", tmp_path / "m.onnx", "--json")
    assert r.code == 0, r.err
    return pt, tmp_path / "m.onnx"


def test_benchmark_pt_and_onnx(cli, artifacts, tiny_data, tmp_path):
    pt, onnx_path = artifacts
    r = cli(
        "benchmark",
        pt,
        onnx_path,
        "--data",
        tiny_data,
        "--runs",
        "5",
        "--warmup",
        "1",
        "--csv",
        tmp_path / "b.csv",
        "--plot",
        tmp_path / "b.png",
        "--json",
    )
    assert r.code == 0, r.err
    out = r.json()
    assert out["imgsz"] == 32 and [row["format"] for row in out["rows"]] == ["pytorch", "onnx"]
    first, second = out["rows"]
    assert first["speedup"] == 1.0 and second["speedup"] > 0
    assert first["params"] == second["params"] and first["gflops"] == pytest.approx(
        second["gflops"], rel=0.02
    )
    assert abs(first["top1"] - second["top1"]) <= 1 / 18  # same model, at most one image apart
    with open(tmp_path / "b.csv") as f:
        assert [row["format"] for row in csv.DictReader(f)] == ["pytorch", "onnx"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_table_without_data(cli, artifacts):
    pt, _ = artifacts
    r = cli("benchmark", pt, "--runs", "3", "--warmup", "0")
    assert r.code == 0 and "1.00x" in r.out and "n/a" in r.out  # no --data: top-1 not measured


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("missing.pt",), "no such file"),
        (("--batch-size", "4"), "fixed batch of 1"),
        (("--runs", "0"), "--runs must be"),
        (("--imgsz", "48"), "stride 32"),
    ],
)
def test_benchmark_refusals(cli, artifacts, tmp_path, monkeypatch, extra, fragment):
    monkeypatch.chdir(tmp_path)
    pt, onnx_path = artifacts
    r = cli("benchmark", pt, onnx_path, *extra, "--plot", tmp_path / "p.png")
    assert r.code == 1 and fragment in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "p.png").exists()
