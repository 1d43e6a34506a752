"""`train --resume` continues the run folder that last.pt sits in (<run>/weights/last.pt), wherever that
folder was moved, and refuses what would not resume exactly (issue 13, defect 7): a last.pt outside a run
folder, a run folder without its results.csv or best.pt, and a dataset whose classes changed."""

from __future__ import annotations

import csv
import os
import shutil

import pytest
from tiny_train import tiny_train_config

from optkit.errors import CheckpointError, DatasetError
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    return tiny_train_config(tmp_path, data, **{"stop_after": 1, **kw})  # split runs: resumed later


def _resume(last) -> Trainer:
    return Trainer(TrainConfig(resume_from=str(last), workers=0))


def _tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def _epochs(results_csv) -> list[str]:
    with open(results_csv) as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def test_moved_run_folder_resumes_in_place_and_a_lone_last_pt_is_refused(tmp_path, tiny_data, monkeypatch):
    first = Trainer(_cfg(tmp_path, tiny_data)).run()
    moved = tmp_path / "elsewhere" / "my-run"
    moved.parent.mkdir()
    shutil.move(first.save_dir, moved)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)

    lone = tmp_path / "saved" / "last.pt"  # last.pt alone, out of its run folder
    lone.parent.mkdir()
    shutil.copy(moved / "weights" / "last.pt", lone)
    before = _tree(tmp_path)
    with pytest.raises(CheckpointError, match=r"not in a run folder \(<run>/weights/last\.pt\)"):
        _resume(lone).run()
    assert _tree(tmp_path) == before  # nothing written next to it, above it, or here

    (moved / "args.yaml").unlink()  # a record of last.pt's own options, written again at every start
    r = _resume(os.path.relpath(moved / "weights" / "last.pt")).run()  # a relative path from elsewhere
    assert r.save_dir.resolve() == moved.resolve() and r.finished
    assert r.best.is_file() and r.last.resolve() == (moved / "weights" / "last.pt").resolve()
    assert _epochs(moved / "results.csv") == ["1", "2"]
    assert _tree(here) == [] and (moved / "args.yaml").is_file()


@pytest.mark.parametrize("lost", ["results.csv", "results-rows", "weights/best.pt"])
def test_a_run_folder_missing_what_exact_resume_needs_is_refused(tmp_path, tiny_data, lost):
    first = Trainer(_cfg(tmp_path, tiny_data, epochs=3, stop_after=2)).run()
    if lost == "results-rows":  # the rows of epochs 1-2 lost (a results.csv from another run)
        (first.save_dir / "results.csv").write_text("epoch,top1\n")
    else:
        (first.save_dir / lost).unlink()
    before = _tree(tmp_path)
    with pytest.raises(CheckpointError) as e:
        _resume(first.last).run()
    message = str(e.value)
    assert os.path.basename(lost if lost != "results-rows" else "results.csv") in message
    assert "epoch" in message and "\n" not in message
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("change", ["class-removed", "class-renamed"])
def test_resume_refuses_a_dataset_whose_classes_changed(tmp_path, tiny_data, change):
    first = Trainer(_cfg(tmp_path, tiny_data)).run()
    for split in ("train", "val"):
        red = tiny_data / split / "red"
        if change == "class-removed":
            shutil.rmtree(red)
        else:
            red.rename(red.with_name("rose"))
    now = "blue, green" if change == "class-removed" else "blue, green, rose"
    with pytest.raises(DatasetError, match="classes") as e:
        _resume(first.last).run()
    assert f"({now})" in str(e.value) and "(blue, green, red)" in str(e.value)
    assert _epochs(first.save_dir / "results.csv") == ["1"]  # the run folder is as it was
