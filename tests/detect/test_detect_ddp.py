"""A real `torchrun --nproc_per_node 2 -m optkit train` of a detector on CPU (gloo), launched as
tests/train/test_ddp.py launches classifier runs."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from torchrun import run_torchrun

from optkit.checkpoint import load_checkpoint

TRAIN = "--model test-det --epochs 2 --imgsz 64 --batch-size 8 --warmup-epochs 0 --workers 0 --close-mosaic 1"


@pytest.mark.slow
def test_torchrun_trains_a_detector(cli, tmp_path, det_data):
    r = run_torchrun("-m", "optkit", "train", "--data", det_data, *TRAIN.split(), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1  # rank 0 alone prints (one JSON object)
    summary = json.loads(r.stdout)
    assert summary["task"] == "detect" and summary["epoch"] == 2 and "best_map" in summary
    assert sorted(p.name for p in (tmp_path / "runs/train").iterdir()) == ["exp"]  # chosen by rank 0
    run = tmp_path / "runs/train/exp"
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"] and "map" in rows[0] and "val_box_loss" in rows[0]
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["world_size"] == 2 and args["batch_size_used"] == 8

    best, last = load_checkpoint(run / "weights/best.pt"), load_checkpoint(run / "weights/last.pt")
    assert best.task == "detect" and {"map", "map50", "precision", "recall"} <= set(best.metrics)
    for state in (best.model, last.model, last.ema):
        assert state and not any(k.startswith("module.") for k in state)
    assert last.epoch == 1 and last.updates > 0
    # rank 0's validation equals a single-process evaluation of the same weights
    val = cli("val", run / "weights/best.pt", "--data", det_data, "--workers", "0", "--json")
    assert val.code == 0, val.err
    for key in ("map", "map50", "precision", "recall"):
        assert val.json()[key] == pytest.approx(best.metrics[key], abs=1e-9), key
    assert val.json()["loss"] == pytest.approx(best.metrics["loss"], rel=1e-5)
