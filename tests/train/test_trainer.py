"""The embedded trainer on tiny models and tiny image folders."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from tiny_train import tiny_train_config

from optkit.checkpoint import build_model, load_checkpoint
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    return tiny_train_config(tmp_path, data, **kw)


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


def test_resume_is_exact(tmp_path, tiny_data):
    straight = Trainer(_cfg(tmp_path, tiny_data, name="straight", model_options={"dropout": 0.2})).run()
    first = Trainer(
        _cfg(tmp_path, tiny_data, name="split", stop_after=1, model_options={"dropout": 0.2})
    ).run()
    assert first.epoch == 1 and not first.finished
    resumed = Trainer(TrainConfig(resume_from=str(first.last), workers=2)).run()
    assert resumed.save_dir == first.save_dir and resumed.epoch == 2 and resumed.finished

    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in a.model:
        assert torch.allclose(a.model[key].float(), b.model[key].float(), atol=1e-6, rtol=0), key
        assert torch.allclose(a.ema[key].float(), b.ema[key].float(), atol=1e-6, rtol=0), key
    assert a.updates == b.updates
    assert _rows(straight.save_dir / "results.csv") == _rows(resumed.save_dir / "results.csv")
    assert len(_rows(resumed.save_dir / "results.csv")) == 2
    assert [e["stage"] for e in b.lineage] == ["train"]


def test_resume_of_finished_run_is_refused(tmp_path, tiny_data):
    from optkit.errors import ConfigError

    done = Trainer(_cfg(tmp_path, tiny_data, epochs=1)).run()
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(TrainConfig(resume_from=str(done.last))).run()


def test_run_folder_contents_and_safe_checkpoints(tmp_path, tiny_data):
    r = Trainer(_cfg(tmp_path, tiny_data)).run()
    assert r.save_dir == tmp_path / "runs" / "exp"
    for name in ("args.yaml", "results.csv", "weights/best.pt", "weights/last.pt"):
        assert (r.save_dir / name).is_file(), name
    assert yaml.safe_load((r.save_dir / "args.yaml").read_text())["lr0"] == 0.001  # a classifier's default
    for path in (r.best, r.last):
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == "optkit-checkpoint/1"
    best, last = load_checkpoint(r.best), load_checkpoint(r.last)
    assert best.optimizer is None and best.ema is None  # deployable: EMA weights as the model
    assert last.optimizer is not None and last.ema is not None and last.train_args is not None
    assert best.names == ["blue", "green", "red"] and best.imgsz == 32
    assert best.lineage[-1]["stage"] == "train"
    # the rebuilt model gives the same outputs as a second rebuild (deterministic, strict load)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_model(best)(x), build_model(load_checkpoint(r.best))(x))
    # second run goes to exp2
    assert Trainer(_cfg(tmp_path, tiny_data, epochs=1)).run().save_dir.name == "exp2"


def test_training_learns_the_tiny_colour_dataset(tmp_path, tiny_data):
    # batch 8: enough iterations for the BatchNorm running statistics (momentum 0.03) to settle
    r = Trainer(_cfg(tmp_path, tiny_data, epochs=10, batch_size=8, lr0=0.01)).run()
    assert r.best_fitness >= 0.9, r.final


def test_finetune_on_different_class_count_reshapes_head(tmp_path, tiny_data, two_class_data):
    base = Trainer(_cfg(tmp_path, tiny_data, epochs=1)).run()
    tuned = Trainer(
        _cfg(tmp_path, two_class_data, model=None, weights=str(base.best), epochs=1, name="ft")
    ).run()
    assert any("3 -> 2 classes" in n and "model." in n for n in tuned.notes), tuned.notes
    ckpt = load_checkpoint(tuned.best)
    assert ckpt.names == ["cat", "dog"]
    assert build_model(ckpt)(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    assert [e["stage"] for e in ckpt.lineage] == ["train", "train"]


def test_freeze_keeps_first_blocks_fixed(tmp_path, tiny_data):
    base = Trainer(_cfg(tmp_path, tiny_data, epochs=1)).run()
    tuned = Trainer(
        _cfg(tmp_path, tiny_data, model=None, weights=str(base.best), epochs=1, freeze=2, name="frozen")
    ).run()
    before, after = load_checkpoint(base.best).model, load_checkpoint(tuned.last).model
    frozen = [k for k in before if k.startswith(("model.0.", "model.1.")) and k.endswith("weight")]
    trained = [k for k in before if k.startswith("model.2.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_early_stopping(tmp_path, tiny_data):
    r = Trainer(_cfg(tmp_path, tiny_data, epochs=8, patience=1, lr0=1e-9, optimizer="SGD")).run()
    assert r.stopped_early and r.epoch < 8


def test_fraction_trains_on_subset(tmp_path, tiny_data):
    t = Trainer(_cfg(tmp_path, tiny_data, fraction=0.25))
    t.setup()
    assert len(t.sampler) == round(72 * 0.25)


def test_autobatch_falls_back_on_cpu(tmp_path, tiny_data):
    r = Trainer(_cfg(tmp_path, tiny_data, epochs=1, batch_size=-1))
    r.setup()
    assert r.batch_size == 64
    assert any("autobatch needs CUDA" in n for n in r.notes)


def test_cuda_request_without_cuda_is_refused(tmp_path, tiny_data):
    from optkit.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Trainer(_cfg(tmp_path, tiny_data, device="0")).setup()
    assert not (tmp_path / "runs").exists()
