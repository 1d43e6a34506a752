"""Ctrl-C during `optkit train`: exit 130, a message naming the saved last.pt, and a resumable run."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time

import pytest

from optkit.checkpoint import load_checkpoint


@pytest.mark.slow
def test_sigint_keeps_last_pt_and_resume_continues(tmp_path, tiny_data):
    args = [
        sys.executable,
        "-m",
        "optkit",
        "train",
        "--model",
        "test-tiny",
        "--data",
        str(tiny_data),
        "--epochs",
        "1000",
        "--imgsz",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "0",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "runs/train/exp/weights/last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside a later epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "training interrupted in epoch" in err and "optkit train --resume" in err
    assert "Traceback" not in err
    saved = load_checkpoint(last)  # complete and loadable
    assert saved.optimizer is not None and saved.epoch >= 0

    resume = subprocess.run(
        [sys.executable, "-m", "optkit", "train", "--resume", str(last), "--stop-after", "1", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resume.returncode == 0, resume.stderr
    with open(tmp_path / "runs/train/exp/results.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(1, saved.epoch + 3))  # no duplicated or missing epochs


@pytest.mark.slow
def test_ctrl_c_with_dataloader_workers_exits_cleanly_and_leaves_no_process(tmp_path, tiny_data):
    """A terminal's Ctrl-C reaches the whole process group: the trainer and its DataLoader workers.
    Sent that way (os.killpg) with --workers 2: exit 130 with the one message, no traceback or worker
    error, a loadable last.pt, and no process of the group left behind."""
    import os

    args = [sys.executable, "-m", "optkit", "train", "--model", "test-tiny", "--data", str(tiny_data),
            "--epochs", "1000", "--imgsz", "32", "--batch-size", "8", "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    last = tmp_path / "runs/train/exp/weights/last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # inside a later epoch, workers busy
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "training interrupted in epoch" in err and "Traceback" not in err, err
    assert "DataLoader worker" not in err and "Exception ignored" not in err, err
    assert load_checkpoint(last).optimizer is not None
    deadline = time.monotonic() + 10  # workers end on their own after the parent: give them a moment
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # signal 0: does any process of the group still exist?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("DataLoader workers outlived the interrupted trainer")
