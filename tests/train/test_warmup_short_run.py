"""A short run reaches its learning rate (issue 13, defect 10): the warm-up (warmup_epochs worth, at least
100 iterations) is cut to a third of the run's iterations when it would be longer, and a note says so."""

from __future__ import annotations

import csv

import pytest

from optkit.train.config import TrainConfig
from optkit.train.optim import warmup_iterations
from optkit.train.trainer import Trainer


def test_two_epoch_run_on_a_small_set_reaches_its_learning_rate(tmp_path, tiny_data):
    lrs = []

    def progress(event, **info):
        if event == "batch":
            lrs.append(info["lr"])

    cfg = TrainConfig(
        model="test-tiny",
        data=str(tiny_data),
        epochs=2,
        imgsz=32,
        batch_size=16,
        workers=0,
        project=str(tmp_path / "runs"),
        lr0=0.01,
        optimizer="SGD",
    )  # 72 images in batches of 16: 5 iterations an epoch, 10 in all (the default warm-up was 100)
    r = Trainer(cfg, progress=progress).run()
    assert len(lrs) == 10
    notes = [n for n in r.notes if "warm-up" in n]
    assert len(notes) == 1 and "3 iterations" in notes[0] and "10" in notes[0], r.notes
    assert max(lrs) >= 0.6 * cfg.lr0  # linear decay from the first iteration: 0.70 x lr0 after warm-up
    with open(r.save_dir / "results.csv") as f:
        assert float(next(csv.DictReader(f))["lr_weights"]) >= 0.5 * cfg.lr0


@pytest.mark.parametrize(
    "epochs, nb, warmup_epochs, expected",
    [
        (2, 5, 1.0, 3),  # 10 iterations: a third
        (3, 2, 1.0, 2),  # 6 iterations: a third
        (1, 2, 1.0, 0),  # 2 iterations: too short to warm up at all
        (100, 5, 1.0, 100),  # 500 iterations: the 100-iteration minimum fits
        (10, 50, 1.0, 100),  # 500 iterations
        (2, 300, 1.0, 200),  # one epoch of 300 asked, 600 in all: a third
        (10, 300, 3.0, 900),  # 900 of 3000: fits
        (2, 5, 0.0, 0),  # warm-up off
    ],
)
def test_warmup_is_at_most_a_third_of_the_run(epochs, nb, warmup_epochs, expected):
    cfg = TrainConfig(model="x", epochs=epochs, warmup_epochs=warmup_epochs)
    assert warmup_iterations(cfg, nb) == expected


def test_the_note_says_what_was_cut():
    from optkit.train.optim import warmup_note

    assert warmup_note(TrainConfig(model="x", epochs=100), 5) is None  # nothing cut
    note = warmup_note(TrainConfig(model="x", epochs=2, lr0=0.002), 300)  # lr0 as the trainer resolves it
    assert "cut from 300 to 200 iterations" in note and note.endswith("from --lr0 0.002")
    assert warmup_note(TrainConfig(model="x", epochs=1), 2).startswith("no warm-up: this run has 2 it")
