"""Two leftovers of issue 13 in `optkit train`.

1. BatchNorm cannot train on one image ("Expected more than 1 value per channel"): a batch that leaves
   one image per process is refused before any work when the model has BatchNorm layers (train,
   torchrun's global batch, autobatch, prune's fine-tune); a model without BatchNorm (a fused checkpoint,
   as every QAT input is) trains at batch 1.
2. `train --resume` takes an explicitly given `--data` (a dataset that was moved) in place of the saved
   path, still exactly; a saved path that is gone gives an error saying to pass `--data NEW_PATH`.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_train import tiny_train_config

from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "checkpoints"  # blue, green, red


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    return tiny_train_config(tmp_path, data, **kw)


def _tree(root) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), root): Path(d, f).read_bytes()
        for d, _, files in os.walk(root)
        for f in files
    }


def _rows(path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


def _one_error_line(r) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == 1, (r.code, r.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and "unexpected" not in r.err
    return lines[0]


@pytest.fixture
def resolved(monkeypatch) -> list[str]:
    """The --data values resolved during the test (read, or generated for builtin: data)."""
    import optkit.data.loader

    calls: list[str] = []
    real = optkit.data.loader.resolve_data

    def recording(spec, *args, **kwargs):
        calls.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(optkit.data.loader, "resolve_data", recording)  # what the tasks call
    return calls


# ---- 1. one image per process with BatchNorm --------------------------------------------------------


@pytest.mark.parametrize("source", [["--model", "test-tiny"], ["--weights", str(FIXTURES / "plain.pt")]])
def test_batch_of_one_is_refused_before_any_work(cli, tmp_path, tiny_data, resolved, source):
    runs = tmp_path / "runs"
    r = cli("train", *source, "--data", tiny_data, "--batch-size", "1", "--workers", "0", "--project", runs)
    line = _one_error_line(r)
    assert "--batch-size 1" in line and "BatchNorm" in line and "2 images" in line, line
    assert resolved == [] and not runs.exists()  # refused before the data was read or a folder made


def test_a_global_batch_leaving_one_image_per_process_is_refused():
    from optkit.errors import ConfigError
    from optkit.limits import options_named
    from optkit.train.distributed import DistContext
    from optkit.workflows.train import FLAGS

    cfg = TrainConfig(model="test-tiny", batch_size=2, device="cpu")
    two = DistContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    with pytest.raises(ConfigError) as e:
        Trainer(cfg, dist=two).prepare()
    assert "batch_size 4" in str(e.value) and e.value.values["least"] == 4  # the trainer names the field
    with pytest.raises(ConfigError) as e, options_named(FLAGS):  # the train flow names the flag
        Trainer(cfg, dist=two).prepare()
    message = str(e.value)
    assert "1 image per process" in message and "--batch-size 4" in message and "BatchNorm" in message
    Trainer(TrainConfig(model="test-tiny", batch_size=4, device="cpu"), dist=two).prepare()  # 2 each: fine


def test_autobatch_never_picks_one_image_for_a_batchnorm_model(tmp_path, tiny_data, monkeypatch):
    import optkit.train.autobatch

    def tight(model, imgsz, device, **kw):  # what autobatch says when memory fits one image
        return 1, "autobatch: 1 images fill 60% of 0.1 GiB free"

    monkeypatch.setattr(optkit.train.autobatch, "autobatch", tight)
    result = Trainer(_cfg(tmp_path, tiny_data, batch_size=-1, epochs=1)).run()
    args = yaml.safe_load((result.save_dir / "args.yaml").read_text())
    assert args["batch_size_used"] == 2
    assert any("BatchNorm" in n and "2" in n for n in result.notes), result.notes


def test_a_model_without_batchnorm_trains_at_batch_one(cli, tmp_path, tiny_data):
    from optkit.checkpoint import build_model, load_checkpoint

    fused = FIXTURES / "fused.pt"
    model = build_model(load_checkpoint(fused))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    runs = tmp_path / "runs"
    args = ("--data", tiny_data, "--epochs", "1", "--workers", "0", "--project", runs, "--json")
    r = cli("train", "--weights", fused, "--batch-size", "1", "--fraction", "0.2", *args)
    assert r.code == 0, r.err
    used = yaml.safe_load((runs / "exp" / "args.yaml").read_text())
    assert used["batch_size_used"] == 1 and (runs / "exp" / "weights" / "best.pt").is_file()


def test_qat_input_has_no_batchnorm_so_batch_one_trains(cli, tmp_path, tiny_data):
    """QAT fine-tunes a PTQ checkpoint, which is always fused: batch 1 is not refused there."""
    runs = tmp_path / "runs"
    args = ("--data", tiny_data, "--epochs", "1", "--workers", "0", "--fraction", "0.2", "--project", runs)
    r = cli("qat", FIXTURES / "int8.pt", "--batch-size", "1", "--num-images", "4", *args, "--json")
    assert r.code == 0, r.err
    assert r.json()["epochs_run"] == 1


def test_prune_finetune_at_batch_one_is_refused_before_pruning(cli, tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fine-tune's run folder would go under runs/prune here
    out = tmp_path / "pruned.pt"
    args = ("--amount", "0.3", "--data", tiny_data, "--finetune-epochs", "1", "--workers", "0", "-o", out)
    r = cli("prune", FIXTURES / "plain.pt", "--batch-size", "1", *args)
    line = _one_error_line(r)
    assert "--batch-size 1" in line and "BatchNorm" in line, line
    assert not out.exists() and not (tmp_path / "runs" / "prune").exists()


# ---- 2. --data on --resume ------------------------------------------------------------------------


def test_resume_takes_an_explicit_data_for_a_moved_dataset_exactly(
    cli, tmp_path, tiny_data, two_class_data, monkeypatch
):
    from optkit.checkpoint import load_checkpoint

    straight = Trainer(_cfg(tmp_path, tiny_data, name="straight")).run()
    work = tmp_path / "work"  # the split run names its dataset relative to here
    shutil.copytree(tiny_data, work / "my-data")
    monkeypatch.chdir(work)
    first = Trainer(_cfg(tmp_path, "my-data", name="split", stop_after=1)).run()
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "elsewhere" / "my-data-v2"
    shutil.move(work / "my-data", moved)
    before = _tree(first.save_dir)

    r = cli("train", "--resume", first.last, "--workers", "0")  # the saved path is gone
    line = _one_error_line(r)
    assert "--data NEW_PATH" in line and "my-data" in line and str(tmp_path) in line, line
    r = cli("train", "--resume", first.last, "--data", two_class_data, "--workers", "0")  # other classes
    assert "classes" in _one_error_line(r)
    assert _tree(first.save_dir) == before  # both refused before anything was written

    r = cli("train", "--resume", first.last, "--data", moved, "--workers", "0", "--json")
    assert r.code == 0, r.err
    assert r.json()["epoch"] == 2 and r.json()["finished"]
    a, b = load_checkpoint(straight.last), load_checkpoint(first.last)
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
        assert torch.equal(a.ema[key], b.ema[key]), key
    assert _rows(straight.save_dir / "results.csv") == _rows(first.save_dir / "results.csv")
    assert b.train_args["data"] == str(moved)  # a later resume finds the dataset where it now is
    assert yaml.safe_load((first.save_dir / "args.yaml").read_text())["data"] == str(moved)


def test_without_resume_data_still_defaults_to_builtin_shapes(cli, tmp_path, monkeypatch):
    import optkit.data.loader
    from optkit.errors import DatasetError

    seen: list[str] = []

    def stop(spec, *args, **kwargs):  # record what train would read, and go no further
        seen.append(spec)
        raise DatasetError("stopped here by the test")

    monkeypatch.setattr(optkit.data.loader, "resolve_data", stop)  # what the tasks call
    r = cli("train", "--model", "test-tiny", "--workers", "0", "--project", tmp_path / "runs")
    assert "stopped here by the test" in _one_error_line(r)
    assert seen == ["builtin:shapes"]
    assert TrainConfig(model="test-tiny").validate().data == "builtin:shapes"
