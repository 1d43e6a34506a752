"""The tests' quick training run: the tiny test model on a tiny image folder (a module of its own, as
image_folders.py: `from conftest import` is ambiguous when several test folders have a conftest.py)."""

from __future__ import annotations


def tiny_train_config(tmp_path, data, **overrides):
    """A TrainConfig for 2 epochs of test-tiny at 32 px, batch 16, no workers, no warm-up, seed 3, runs
    under tmp_path/runs/exp; `overrides` replace any field."""
    from optkit.train.config import TrainConfig

    base = dict(
        model="test-tiny",
        data=str(data),
        epochs=2,
        imgsz=32,
        batch_size=16,
        workers=0,
        project=str(tmp_path / "runs"),
        name="exp",
        warmup_epochs=0.0,
        seed=3,
    )
    return TrainConfig(**{**base, **overrides})
