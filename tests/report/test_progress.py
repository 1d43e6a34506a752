"""optkit.report.progress: a line per step off a terminal, a Rich bar on one, nothing from Quiet; the
trainer's display is built on it."""

from __future__ import annotations

import io
import re

from rich.console import Console

from optkit.report.progress import Quiet, StepDisplay
from optkit.report.train import TrainDisplay

ELAPSED = re.compile(r"\d:\d\d:\d\d")  # Rich's elapsed-time column: only the bar shows it


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120, _environ={}), buf


def _run_steps(progress) -> None:
    with progress.step("reading 8 images [x]", total=8) as step:
        for _ in range(4):
            step.advance(2, info="batch")
    with progress.step("building the model", line=False):
        pass
    progress.warn("calibrating on 1 image")
    progress.note("a note")


def test_off_a_terminal_each_step_is_one_line():
    console, buf = _console(terminal=False)
    with StepDisplay(console) as progress:
        _run_steps(progress)
    assert buf.getvalue().splitlines() == [
        "reading 8 images [x]",  # printed as is (no Rich markup eats "[x]")
        "warning: calibrating on 1 image",
        "note: a note",
    ]


def test_on_a_terminal_each_step_is_a_bar():
    console, buf = _console(terminal=True)
    with StepDisplay(console) as progress:
        _run_steps(progress)
    text = buf.getvalue()
    assert "\x1b[" in text and ELAPSED.search(text)  # a live display, with its elapsed-time column
    assert "reading 8 images [x]" in text and "0/8" in text  # the counted step shows done/total
    assert "building the model" in text  # line=False steps still show on a terminal
    assert "warning: calibrating on 1 image\n" in text and "note: a note\n" in text


def test_quiet_and_an_unentered_display():
    quiet = Quiet()
    with quiet.step("x", total=3) as step:
        step.advance()
    quiet.warn("nothing")
    quiet("batch", epoch=0)  # the trainer's events are accepted and ignored
    console, buf = _console(terminal=True)
    StepDisplay(console).step("not entered: a line")  # outside `with`: no bar to draw on
    assert buf.getvalue() == "not entered: a line\n"


def _train_events(display) -> None:
    display("start", save_dir="runs/prune/m", start_epoch=0, notes=["keeping 3 tensors sparse"])
    for i in range(3):
        display("batch", epoch=0, i=i, nb=3, loss=1.0, seen=8 * (i + 1), lr=1e-3)
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "top1": 0.5, "top5": 1.0, "lr_weights": 1e-3}
    display("epoch", row={**row, "time": 1.0}, improved=True, images_per_s=100.0)


def test_train_display_off_a_terminal_prints_the_run_and_one_line_per_epoch():
    console, buf = _console(terminal=False)
    with TrainDisplay(console) as display:
        _train_events(display)
    lines = buf.getvalue().splitlines()
    assert lines[:2] == ["note: keeping 3 tensors sparse", "training -> runs/prune/m"]
    assert len(lines) == 3 and lines[2].startswith("epoch   1  loss 1.0000") and lines[2].endswith(" *")


def test_train_display_on_a_terminal_shows_the_epoch_bar():
    console, buf = _console(terminal=True)
    with TrainDisplay(console) as display:
        _train_events(display)
    text = buf.getvalue()
    assert re.search(r"epoch 1 .*\d/3", text) and ELAPSED.search(text)
    assert "training -> runs/prune/m\n" in text and "epoch   1  loss" in text
