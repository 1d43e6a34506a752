"""SIGTERM (`kill`, `timeout`, `docker stop`, a cancelled CI job) is handled like Ctrl-C by every command.

Real `optkit` processes and real signals: one line on stderr, exit code 143 (128 + SIGTERM), no
traceback, the cleanup Ctrl-C gets (no temp file, the old output or none), and for `train` the saved
epoch and the resume command. Every wait has a bound, so a regression fails instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optkit.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

TIMEOUT = 120  # seconds for any child process
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optkit", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"optkit (pid {proc.pid}) did not end within 60 s of SIGTERM")
    return proc.returncode, err


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("to_group, workers", [(True, "2"), (False, "0")], ids=["group-workers", "process"])
def test_sigterm_to_train_says_what_was_saved_and_exits_143(tmp_path, tiny_data, to_group, workers):
    """To the process group (as `timeout` and systemd send it) with DataLoader workers, or to the trainer
    alone (as `kill PID` and `docker stop` do): the Ctrl-C message, exit 143, nothing left running."""
    args = ["train", "--model", "test-tiny", "--data", str(tiny_data), "--epochs", "1000",
            "--imgsz", "32", "--batch-size", "8", "--workers", workers]  # fmt: skip
    proc = _start(args, tmp_path, start_new_session=True)
    last = tmp_path / "runs/train/exp/weights/last.pt"
    assert _wait_for(last.exists, proc), proc.communicate()
    time.sleep(0.3)  # inside a later epoch
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    code, err = _finish(proc)
    lines = err.strip().splitlines()
    assert code == 143, err
    assert lines[-1].startswith("error: training interrupted in epoch"), err
    assert "holds epoch" in lines[-1] and "optkit train --resume runs/train/exp/weights/last.pt" in lines[-1]
    assert "Traceback" not in err and "DataLoader worker" not in err and "Exception ignored" not in err, err
    assert load_checkpoint(last).optimizer is not None  # whole and resumable
    assert not list(last.parent.glob(".*.tmp"))
    assert _wait_for(lambda: not _group_alive(proc.pid), proc, timeout=10), "a process of the run outlived it"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # signal 0: does any process of the group still exist?
    except ProcessLookupError:
        return False
    return True


# ---- stages: SIGTERM inside the output write leaves the old output or none -------------------------


@pytest.fixture(scope="module")
def big_ckpt(tmp_path_factory) -> Path:
    """A yolo-cls-n checkpoint (about 6 MB, so each write lasts long enough to catch)."""
    import torch

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model("yolo-cls-n", num_classes=3)
    path = tmp_path_factory.mktemp("sigterm-input") / "in.pt"
    return save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), path)


def _temps(folder: Path, name: str, pid: int) -> list[Path]:
    """optkit's temp files for `name` written by `pid` (optkit.io: `.<name>.<pid>.<hex>.tmp`)."""
    return list(folder.glob(f".{name}.{pid}.*.tmp")) if folder.is_dir() else []


def _stopped(pid: int) -> bool:
    """Wait until the kernel reports `pid` stopped (SIGSTOP is asynchronous); False if it ended first."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("T", "t"):
            return True
        if state in ("Z", "X"):
            return False
        time.sleep(0.0005)
    raise AssertionError(f"process {pid} did not stop")


def _freeze_inside_write(proc: subprocess.Popen, out: Path) -> Path | None:
    """SIGSTOP `proc` while its temp file for `out` exists; that temp file, or None if it ended first."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _temps(out.parent, out.name, proc.pid):
            os.kill(proc.pid, signal.SIGSTOP)
            if not _stopped(proc.pid):
                return None
            still = _temps(out.parent, out.name, proc.pid)
            if still:
                return still[0]
            os.kill(proc.pid, signal.SIGCONT)  # that write finished meanwhile
        time.sleep(0.0005)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "command, out_name, old_output",
    [("fuse", "out.pt", True), ("fuse", "out.pt", False), ("export", "out.onnx", False)],
)
def test_sigterm_inside_a_stage_write_exits_143_and_leaves_old_output_or_none(
    tmp_path, big_ckpt, command, out_name, old_output
):
    src = tmp_path / "in.pt"
    src.write_bytes(big_ckpt.read_bytes())
    out = tmp_path / "out" / out_name
    out.parent.mkdir()
    for _attempt in range(5):  # a write lasts milliseconds: retry until SIGTERM lands inside one
        if old_output:
            out.write_bytes(b"the previous output")
        proc = _start([command, str(src), "-o", str(out)], tmp_path)
        temp = _freeze_inside_write(proc, out)
        if temp is not None:
            break
        assert _finish(proc)[0] == 0
        out.unlink()
    else:
        pytest.fail(f"no SIGTERM landed inside the write of {out_name} in 5 attempts")
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    code, err = _finish(proc)
    assert code == 143 and err.strip().splitlines()[-1] == "error: terminated", (code, err)
    assert "Traceback" not in err
    assert not temp.exists()  # SIGTERM removes the temp file, as Ctrl-C does
    if out.exists() and out.read_bytes() != b"the previous output":  # frozen inside the rename (rare)
        _assert_whole(out)
        return
    assert out.exists() == old_output
    assert src.read_bytes() == big_ckpt.read_bytes()  # the input is untouched


def _assert_whole(out: Path) -> None:
    if out.suffix == ".pt":
        load_checkpoint(out)
    else:
        import onnx

        onnx.checker.check_model(str(out))
