"""`optkit train` of a detector (issue 14, part 6): the run folder, results.csv's detection columns, the JSON
summary, best.pt's task and metrics, exact resume, --close-mosaic, fine-tuning on other classes and
--skip-bad-labels."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from yolo_folders import NAMES

from optkit.checkpoint import build_model, load_checkpoint
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer

COLUMNS = [
    "epoch", "train_box_loss", "train_cls_loss", "train_dfl_loss", "val_box_loss", "val_cls_loss",
    "val_dfl_loss", "precision", "recall", "map50", "map", "lr_weights", "lr_norm", "lr_bias", "time",
]  # fmt: skip
TRAIN = ["--model", "test-det", "--epochs", "2", "--imgsz", "64", "--batch-size", "8", "--workers", "0"]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def _other_names(tmp_path: Path, det_data: Path, names: list[str]) -> Path:
    """A data.yaml over the same images and labels that calls the classes otherwise."""
    spec = {"path": str(det_data.parent), "train": "images/train", "val": "images/val", "names": names}
    path = tmp_path / "renamed.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _copy_with_bad_row(tmp_path: Path, det_data: Path) -> tuple[Path, Path]:
    """A copy of the dataset whose train label 000.txt has a 4-column second row; (data.yaml, label)."""
    root = tmp_path / "bad"
    shutil.copytree(det_data.parent, root, ignore=shutil.ignore_patterns("*.optkit.cache"))
    label = root / "labels" / "train" / "000.txt"
    label.write_text(label.read_text().splitlines()[0] + "\n0 0.5 0.5 0.2\n")
    return root / "data.yaml", label


def test_train_writes_a_detection_run(cli, tmp_path, det_data):
    r = cli(
        "train", *TRAIN, "--data", det_data, "--project", tmp_path / "runs", "--close-mosaic", "1", "--json"
    )
    assert r.code == 0, r.err
    summary = r.json()
    run = tmp_path / "runs" / "exp"
    assert Path(summary["save_dir"]) == run and summary["task"] == "detect" and summary["epoch"] == 2
    assert 0.0 <= summary["best_map"] <= 1.0 and "best_top1" not in summary
    for name in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml"):
        assert (run / name).is_file(), name
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["close_mosaic"] == 1  # mosaics in epoch 1 only
    assert args["lr0"] == 0.002  # no --lr0: the detectors' default (a classifier's is 0.001)
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert all(float(row[k]) >= 0 for k in COLUMNS[1:7]), row  # losses are numbers, not blanks
        assert all(0 <= float(row[k]) <= 1 for k in ("precision", "recall", "map50", "map")), row

    best = load_checkpoint(run / "weights" / "best.pt")
    assert best.task == "detect" and best.names == NAMES and best.imgsz == 64
    assert {"map", "map50", "precision", "recall"} <= set(best.metrics)
    assert best.preprocess == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # pixels / 255 only
    fitness = 0.1 * best.metrics["map50"] + 0.9 * best.metrics["map"]
    assert best.best_fitness == pytest.approx(fitness, abs=1e-9)
    # the row of the best epoch holds best.pt's figures
    best_row = rows[int(best.epoch)]
    assert float(best_row["map"]) == pytest.approx(best.metrics["map"], abs=1e-6)
    with torch.no_grad():
        out = build_model(best).eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 4 + len(NAMES), 8 * 8 + 4 * 4 + 2 * 2)  # [B, 4 + nc, N], strides 8/16/32


def test_resume_of_a_detector_is_exact(tmp_path, det_data, det_config, det_run):
    first = Trainer(det_config(tmp_path / "runs", det_data, name="split", stop_after=1)).run()
    assert first.epoch == 1 and not first.finished
    resumed = Trainer(TrainConfig(resume_from=str(first.last), workers=0)).run()
    assert resumed.save_dir == first.save_dir and resumed.epoch == 2 and resumed.finished

    for name in ("best.pt", "last.pt"):
        a = load_checkpoint(det_run.save_dir / "weights" / name)
        b = load_checkpoint(first.save_dir / "weights" / name)
        assert a.epoch == b.epoch and a.updates == b.updates, name
        states = [(a.model, b.model)] + ([(a.ema, b.ema)] if a.ema is not None else [])
        for x, y in states:
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), (name, key)
    assert _rows(det_run.save_dir / "results.csv") == _rows(first.save_dir / "results.csv")


def test_close_mosaic_sets_the_epochs_that_train_on_mosaics(tmp_path, det_data, det_config):
    from optkit.data.detect_dataset import DetectDataset

    trainer = Trainer(det_config(tmp_path / "runs", det_data, epochs=3, close_mosaic=1))
    trainer.setup()
    dataset = trainer.train_loader.dataset
    assert isinstance(dataset, DetectDataset) and dataset.mosaic_epochs == 2
    plain = DetectDataset(dataset.images, dataset.labels, 64, augment=True, mosaic_epochs=0)
    seed = trainer.cfg.seed

    def same(epoch: int, index: int) -> bool:
        (a, la), (b, lb) = dataset[(index, seed, epoch)], plain[(index, seed, epoch)]
        return torch.equal(a, b) and torch.equal(la, lb)

    indices = range(len(dataset))
    assert all(same(2, i) for i in indices)  # the last epoch: whole images only
    assert not all(same(1, i) for i in indices)  # before it: mosaics (YOLO's probability 1.0)


@pytest.mark.parametrize(
    "names", [["box", "blob"], ["box", "blob", "other"]], ids=["same-count", "3-classes"]
)
def test_finetune_on_other_classes_reinitialises_the_class_layers_only(tmp_path, det_data, det_run, names):
    from optkit.models.parts import head_name

    tuned = Trainer(
        TrainConfig(
            weights=str(det_run.best), data=str(_other_names(tmp_path, det_data, names)), epochs=1,
            imgsz=64, batch_size=8, workers=0, project=str(tmp_path / "runs"), name="ft",
        )
    )  # fmt: skip
    tuned.setup()
    before = load_checkpoint(det_run.best).model
    after = {k: v.cpu() for k, v in tuned.model.state_dict().items()}
    head = head_name(tuned.model)
    class_keys = {k for k in after if any(k.startswith(f"{head}.cls.{i}.2.") for i in range(3))}
    box_keys = {k for k in after if any(k.startswith(f"{head}.box.{i}.2.") for i in range(3))}
    assert class_keys and box_keys
    assert tuned.names == names and tuned.model.model[-1].nc == len(names)
    for key in after.keys() - class_keys:  # the backbone, neck, both branches' hidden convs, box output
        assert torch.equal(after[key], before[key]), key
    for key in class_keys:
        if key.endswith("num_batches_tracked"):
            continue
        assert after[key].shape != before[key].shape or not torch.equal(after[key], before[key]), key
    assert any(f"{head}.cls." in note for note in tuned.notes), tuned.notes  # says what was re-initialised
    assert not any(f"{head}.box." in note for note in tuned.notes), tuned.notes


def test_bad_label_row_stops_training_in_one_line(cli, tmp_path, det_data):
    data, label = _copy_with_bad_row(tmp_path, det_data)
    r = cli("train", *TRAIN, "--data", data, "--project", tmp_path / "runs")
    lines = r.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert r.code == 1 and len(errors) == 1 and "Traceback" not in r.err, r.err
    assert errors[0].startswith(f"error: {label}:2: 4 columns"), errors[0]
    assert "--skip-bad-labels" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_skip_bad_labels_trains_without_the_bad_image(cli, tmp_path, det_data):
    data, _ = _copy_with_bad_row(tmp_path, det_data)
    r = cli(
        "train", *TRAIN, "--epochs", "1", "--data", data, "--project", tmp_path / "runs", "--skip-bad-labels"
    )
    assert r.code == 0, r.err
    assert "train: 15 images" in r.err and "1 problems: 1 images dropped" in r.err, r.err
    assert load_checkpoint(tmp_path / "runs" / "exp" / "weights" / "best.pt").task == "detect"
