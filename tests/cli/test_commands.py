"""train / val / info / models through the real CLI entry point, with --json output parsed back."""

from __future__ import annotations

import pytest
import torch


def _tiny_train_args(data) -> list[str]:
    """Two quick epochs of the tiny test model on the tiny colour dataset."""
    quick = "--model test-tiny --epochs 2 --imgsz 32 --batch-size 16 --workers 0"
    return ["--data", str(data), *quick.split()]


@pytest.fixture
def trained(cli, tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("train", *_tiny_train_args(tiny_data), "--json")
    assert r.code == 0, r.err
    return r.json()


def test_train_json_and_run_folder(trained, tmp_path):
    assert trained["save_dir"] == "runs/train/exp" and trained["epoch"] == 2 and trained["finished"]
    assert (tmp_path / trained["best"]).is_file() and (tmp_path / "runs/train/exp/results.csv").is_file()
    assert 0 <= trained["best_top1"] <= 1 and trained["images_per_s"] > 0


def test_val_json_matches_checkpoint_metrics(cli, trained, tiny_data, tmp_path):
    r = cli("val", tmp_path / trained["best"], "--data", tiny_data, "--json", "--workers", "0")
    assert r.code == 0, r.err
    out = r.json()
    assert out["images"] == 18 and out["imgsz"] == 32
    assert out["top1"] == pytest.approx(trained["best_top1"], abs=1e-9)  # same EMA weights, same val split


def test_info_json_and_table(cli, trained, tmp_path):
    path = tmp_path / trained["best"]
    r = cli("info", path, "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert info["arch"] == "test-tiny" and info["names"] == ["blue", "green", "red"]
    assert info["epoch"] == trained["best_epoch"]
    assert info["carries"] == {"ema": False, "optimizer": False, "train_state": False}
    assert info["lineage"][0]["stage"] == "train" and info["params"] > 1000
    assert info["precision"] == "float32" and info["file_bytes"] == path.stat().st_size
    last = cli("info", tmp_path / "runs/train/exp/weights/last.pt", "--json").json()
    assert last["carries"] == {"ema": True, "optimizer": True, "train_state": True}
    table = cli("info", path)
    assert table.code == 0 and "lineage" in table.out and "test-tiny" in table.out


def test_resume_via_cli(cli, tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _tiny_train_args(tiny_data)
    r = cli("train", *args, "--stop-after", "1")
    assert r.code == 0 and "--resume" in r.err
    r = cli("train", "--resume", "runs/train/exp/weights/last.pt", "--json")
    assert r.code == 0, r.err
    assert r.json()["epoch"] == 2 and r.json()["epochs_run"] == 1


def test_models_lists_registry(cli):
    r = cli("models", "--json")
    assert r.code == 0
    rows = {m["name"]: m for m in r.json()["models"]}
    assert {"yolo-cls-n", "yolo-cls-s", "resnet18", "mobilenet-v2"} <= set(rows)
    assert rows["resnet18"]["params"] == 11_689_512 and rows["resnet18"]["stride"] == 32
    assert "test-tiny" not in rows and "test-tiny" in cli("models", "--all", "--json").out


def test_json_stdout_is_only_json(cli, trained, tmp_path):
    r = cli("info", tmp_path / trained["best"], "--json")
    assert r.out.count("\n") == 1 and r.out.startswith("{")


def test_weights_only_loading_of_cli_outputs(trained, tmp_path):
    for name in ("best.pt", "last.pt"):
        assert torch.load(tmp_path / "runs/train/exp/weights" / name, weights_only=True)["format"]
