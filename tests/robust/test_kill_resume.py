"""Crash safety of real `optkit` processes (subprocesses, real signals).

SIGKILL cannot be caught, so what survives it is what was on disk: these tests kill `optkit train` at
random moments and inside checkpoint writes, then check that last.pt is a complete checkpoint, that
`--resume` finishes the run, and that the result equals an uninterrupted run.

Hitting the write window deterministically: optkit writes every file as `.<name>.<pid>.<hex>.tmp`
beside its target and renames it into place (optkit/io.py). The test polls the folder for the temp
file of the child's pid, freezes the child with SIGSTOP, and only counts the trial as "inside the
write" if the temp file still exists while the child is frozen; then it sends SIGKILL (or SIGINT +
SIGCONT). No hook in the product code is needed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from optkit.checkpoint import load_checkpoint

EPOCHS = 8
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process: exact comparisons
TIMEOUT = 120  # seconds for any one child process


def _train_args(data: Path, epochs: int = EPOCHS) -> list[str]:
    return [
        *("train", "--model", "test-tiny", "--data", str(data), "--epochs", str(epochs)),
        *("--imgsz", "32", "--batch-size", "8", "--workers", "0", "--dropout", "0.2"),
    ]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    log = open(cwd / f"stderr-{time.monotonic_ns()}.log", "w+")  # a file, so a full pipe never blocks
    proc = subprocess.Popen(
        [sys.executable, "-m", "optkit", *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=log
    )
    proc.log = log
    return proc


def _stderr(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optkit", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _wait_stopped(pid: int) -> bool:
    """Block until the kernel reports `pid` as stopped (SIGSTOP is delivered asynchronously); False if
    the process exited first (it may finish between our look at its temp file and the SIGSTOP)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("T", "t"):
            return True
        if state in ("Z", "X"):
            return False
        time.sleep(0.0005)
    raise AssertionError(f"process {pid} did not stop")


def _temps(folder: Path, names: tuple[str, ...], pid: int | None = None) -> list[Path]:
    """optkit's temp files for targets `names` in `folder` (of writer `pid` if given)."""
    if not folder.is_dir():
        return []
    return [
        folder / e
        for e in os.listdir(folder)
        if e.endswith(".tmp") and any(e.startswith(f".{n}.{pid}." if pid else f".{n}.") for n in names)
    ]


def _freeze_inside_write(proc: subprocess.Popen, folder: Path, names: tuple[str, ...]) -> Path | None:
    """SIGSTOP `proc` while one of its temp files for `names` exists; return that temp file, or None if
    the process ended first. On return the process is stopped (send SIGKILL, or a signal and SIGCONT)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _temps(folder, names, proc.pid):
            os.kill(proc.pid, signal.SIGSTOP)
            if not _wait_stopped(proc.pid):
                break  # it finished meanwhile
            still = _temps(folder, names, proc.pid)
            if still:  # frozen between creating the temp file and renaming it: inside the write
                return still[0]
            os.kill(proc.pid, signal.SIGCONT)  # it finished that write meanwhile; wait for the next one
        time.sleep(0.0005)
    return None


def _results(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_numbers(a: list[dict], b: list[dict]) -> bool:
    """results.csv rows equal in every column but the wall-clock time."""
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    return drop(a) == drop(b)


def _assert_same_state(a_path: Path, b_path: Path) -> None:
    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    assert a.epoch == b.epoch and a.updates == b.updates
    for part in ("model", "ema"):
        sa, sb = getattr(a, part), getattr(b, part)
        if sa is None:
            assert sb is None
            continue
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (part, key)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run of EPOCHS epochs on its own copy of the tiny data: (data, run folder)."""
    from image_folders import write_image_folder

    root = tmp_path_factory.mktemp("kill-ref")
    data = write_image_folder(root / "colors", ["blue", "green", "red"], per_class=24)
    r = _run(_train_args(data), root)
    assert r.returncode == 0, r.stderr
    return data, root / "runs/train/exp"


def _check_after_kill(run: Path, completed_before: int) -> int:
    """After a SIGKILL: last.pt is a complete checkpoint holding >= `completed_before` epochs and
    results.csv holds no epoch twice. Returns the epochs last.pt holds."""
    ckpt = load_checkpoint(run / "weights/last.pt")  # complete: loads, rebuilds below
    assert ckpt.optimizer is not None and ckpt.ema is not None
    from optkit.checkpoint import build_model

    build_model(ckpt, weights="model")
    epochs = [int(r["epoch"]) for r in _results(run)]
    assert epochs == list(range(1, len(epochs) + 1))
    assert ckpt.epoch + 1 >= completed_before
    return ckpt.epoch + 1


def _resume(run: Path, cwd: Path) -> subprocess.Popen:
    return _start(["train", "--resume", str(run / "weights/last.pt")], cwd)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path, reference):
    """Kill train twice at random moments (mid-epoch, or wherever the moment falls), resume each time;
    the finished run equals the uninterrupted reference: weights, EMA, optimizer steps, results.csv."""
    data, ref = reference
    run = tmp_path / "runs/train/exp"
    rng = random.Random(0)
    proc = _start(_train_args(data), tmp_path)
    kills, held = 0, 0
    while True:
        saved_before = held
        # wait until last.pt holds more than before, then kill somewhere in the next ~2 epochs
        assert _wait_for(lambda n=saved_before: _saved_epochs(run) > n, proc), _stderr(proc)
        if kills == 2 or proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.12))
        if proc.poll() is not None:  # the run ended before the kill: nothing left to interrupt
            break
        proc.kill()
        proc.wait(TIMEOUT)
        kills += 1
        held = _check_after_kill(run, saved_before + 1)
        if held >= EPOCHS:
            break
        proc = _resume(run, tmp_path)
    assert proc.wait(TIMEOUT) in (0, -signal.SIGKILL), _stderr(proc)
    assert kills == 2, f"only {kills} kills landed before the run ended"
    assert [int(r["epoch"]) for r in _results(run)] == list(range(1, EPOCHS + 1))
    assert _same_numbers(_results(run), _results(ref))
    _assert_same_state(run / "weights/last.pt", ref / "weights/last.pt")
    _assert_same_state(run / "weights/best.pt", ref / "weights/best.pt")
    assert not _temps(run / "weights", ("last.pt", "best.pt"))


def _saved_epochs(run: Path) -> int:
    """Epochs the current last.pt holds (0 if none yet). Safe while the trainer writes: atomic rename."""
    path = run / "weights/last.pt"
    if not path.exists():
        return 0
    return load_checkpoint(path).epoch + 1


@pytest.mark.slow
def test_sigkill_inside_checkpoint_writes_then_resume(tmp_path, reference):
    """Kill train 3 times while it is inside the write of last.pt (temp file present, child frozen):
    last.pt stays the previous complete checkpoint byte for byte, the killed writer's temp file is
    cleaned up by the next run, and the resumed run equals the uninterrupted one."""
    data, ref = reference
    run = tmp_path / "runs/train/exp"
    proc = _start(_train_args(data), tmp_path)
    hits = 0
    while hits < 3:
        temp = _freeze_inside_write(proc, run / "weights", ("last.pt",))
        if temp is None:  # the run finished without another write to catch
            break
        last = run / "weights/last.pt"
        before = (_sha(last), load_checkpoint(last).epoch) if last.exists() else None
        proc.kill()  # SIGKILL works on a stopped process
        proc.wait(TIMEOUT)
        hits += 1
        assert temp.exists()  # the half-written file is still there: we really killed inside the write
        if before is None:  # killed inside the very first write: no last.pt, start again
            assert not last.exists()
            proc = _start([*_train_args(data), "--exist-ok"], tmp_path)
            continue
        assert (_sha(last), load_checkpoint(last).epoch) == before  # the old, complete last.pt
        _check_after_kill(run, before[1] + 1)
        proc = _resume(run, tmp_path)
    assert proc.wait(TIMEOUT) == 0, _stderr(proc)
    assert hits == 3, f"only {hits} of 3 kills landed inside a write"
    assert not _temps(run / "weights", ("last.pt", "best.pt"))  # stale temps were removed
    assert [int(r["epoch"]) for r in _results(run)] == list(range(1, EPOCHS + 1))
    assert _same_numbers(_results(run), _results(ref))
    _assert_same_state(run / "weights/last.pt", ref / "weights/last.pt")


@pytest.mark.slow
def test_sigint_inside_checkpoint_write_keeps_previous_last_pt_and_says_so(tmp_path, reference):
    data, _ = reference
    run = tmp_path / "runs/train/exp"
    proc = _start(_train_args(data, epochs=100), tmp_path)
    assert _wait_for(lambda: _saved_epochs(run) >= 2, proc), _stderr(proc)
    temp = _freeze_inside_write(proc, run / "weights", ("last.pt",))
    assert temp is not None, _stderr(proc)
    held = load_checkpoint(run / "weights/last.pt").epoch + 1
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(TIMEOUT) == 130
    err = _stderr(proc).strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    last_line = err[-1]
    assert last_line.startswith("error: training interrupted"), last_line
    ckpt = load_checkpoint(run / "weights/last.pt")
    # the write was abandoned (the previous last.pt); or, when Python swallowed the interrupt inside the
    # writer (a __del__: optkit.train.interrupt), it finished and the run stopped at the next batch.
    # Either way last.pt is whole and the message names the epoch it holds.
    assert ckpt.epoch + 1 in (held, held + 1)
    assert f"runs/train/exp/weights/last.pt holds epoch {ckpt.epoch + 1} " in last_line
    assert "optkit train --resume runs/train/exp/weights/last.pt" in last_line
    assert not _temps(run / "weights", ("last.pt", "best.pt"))  # Ctrl-C cleans up its own temp file


# ---- other commands: an interrupted write leaves the old output or none --------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A yolo-cls-n checkpoint (about 6 MB, so each write lasts long enough to catch reliably)."""
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model("yolo-cls-n", num_classes=3)
    path = tmp_path_factory.mktemp("stage-input") / "in.pt"
    return save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), path)


STAGES = {
    "fuse": (lambda src, out: ["fuse", str(src), "-o", str(out)], "out.pt"),
    "strip": (lambda src, out: ["strip", str(src), "-o", str(out)], "out.pt"),
    "export": (lambda src, out: ["export", str(src), "-o", str(out)], "out.onnx"),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, sig, old_output",
    [
        ("fuse", "SIGKILL", True),
        ("fuse", "SIGINT", False),
        ("strip", "SIGKILL", False),
        ("strip", "SIGINT", True),
        ("export", "SIGKILL", True),
        ("export", "SIGINT", False),
    ],
)
def test_interrupted_stage_leaves_old_output_or_none(tmp_path, trained, command, sig, old_output):
    make_args, out_name = STAGES[command]
    src = tmp_path / "in.pt"
    src.write_bytes(trained.read_bytes())
    src_hash = _sha(src)
    out = tmp_path / "out" / out_name
    if old_output:
        out.parent.mkdir()
        out.write_bytes(b"the previous output")
    # a checkpoint write lasts a few ms: retry until one interruption lands inside it (counted)
    for _attempt in range(5):
        proc = _start(make_args(src, out), tmp_path)
        temp = _freeze_inside_write(proc, out.parent, (out_name,))
        if temp is not None:
            break
        assert proc.wait(TIMEOUT) == 0, _stderr(proc)
        out.unlink()  # it finished before we caught the write; put the old state back and retry
        if old_output:
            out.write_bytes(b"the previous output")
    else:
        pytest.fail(f"no interruption landed inside the write of {out_name} in 5 attempts")
    if sig == "SIGKILL":
        proc.kill()
        proc.wait(TIMEOUT)
        assert temp.exists()  # killed inside the write
    else:
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGCONT)
        code, err = proc.wait(TIMEOUT), _stderr(proc)
        lines = err.strip().splitlines()
        assert code == 130 and lines[-1] == "error: interrupted" and "Traceback" not in err, (code, err)
        assert not temp.exists()  # Ctrl-C removes its temp file
        if _complete(out):  # frozen inside the rename itself: the new output is whole (rare)
            return
    if old_output:
        assert out.read_bytes() == b"the previous output"
    else:
        assert not out.exists()
    assert _sha(src) == src_hash  # the input is untouched
    if sig == "SIGINT":
        return

    # the next run writes a complete output and removes the killed writer's leftovers
    r = _run(make_args(src, out), tmp_path)
    assert r.returncode == 0, r.stderr
    assert not _temps(out.parent, (out_name,))
    assert _complete(out)


def _complete(out: Path) -> bool:
    """`out` exists and is a whole checkpoint / ONNX model (raises if it exists but is not)."""
    if not out.exists() or out.read_bytes() == b"the previous output":
        return False
    if out.suffix == ".pt":
        load_checkpoint(out)
    else:
        import onnx

        onnx.checker.check_model(str(out))
    return True
