"""A first-time `builtin:shapes` build that is killed (SIGTERM, SIGKILL) never blocks the next run.

Real `optkit val ... --data builtin:shapes` processes and real signals, in a temp OPTKIT_CACHE. The child
shrinks the builtin to 2,304 images (a few seconds) and keeps the process pool even on one core: the
pool's workers are what these tests are about. Every wait has a bound, so a regression fails here
instead of hanging: the killed build's workers must die with it and let go of the caller's
stdout/stderr, its lock must pass to the next process, which says what it waits for, and its temp
folder must go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, sends POSIX signals"),
]

TIMEOUT = 120  # seconds for any child to finish a build and a val
CHILD = """
import sys
import optkit.data.shapes as shapes
shapes.BUILTINS["shapes"] = shapes.Builtin(
    shapes.generate_shapes, shapes.VERSION, n_train=2048, n_val=256, seed=0, description="small"
)
shapes._cpu_count = lambda: 2  # a process pool even on one core
from optkit.cli.app import run
sys.argv = ["optkit", *sys.argv[1:]]
sys.exit(run())
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data.shapes import CLASSES
    from optkit.models import create_model

    model = create_model("test-tiny", num_classes=len(CLASSES))
    return save_checkpoint(
        checkpoint_from_model(model, list(CLASSES), 64), tmp_path_factory.mktemp("s8") / "s8.pt"
    )


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def started():
    """Start val children; afterwards SIGKILL whatever of them (and their children) is still alive."""
    procs: list[subprocess.Popen] = []
    kids: list[int] = []

    def start(ckpt: Path, cache: Path, log: Path | None = None) -> subprocess.Popen:
        """Stderr to a pipe, or to the file `log` (read while the process runs)."""
        env = {**os.environ, "OPTKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
        args = [sys.executable, "-c", CHILD, "val", str(ckpt), "--data", "builtin:shapes", "--workers", "0"]
        err = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (the child holds it)
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )  # its own process group, as a terminal or `timeout` makes one
        if log:
            err.close()
        procs.append(proc)
        return proc

    start.kids = kids  # pids of workers seen, for the cleanup
    yield start
    for pid in [p.pid for p in procs if p.poll() is None] + kids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)  # only processes this test started (a regression's orphans)


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc/*/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that never reaps it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_until(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _temp_folders(cache: Path) -> list[Path]:
    datasets = cache / "datasets"
    return sorted(datasets.glob(".shapes-*.tmp-*")) if datasets.is_dir() else []


def _generating(cache: Path) -> bool:
    """A build is under way: its temp folder holds at least one image."""
    return any(next(t.rglob("*.png"), None) is not None for t in _temp_folders(cache))


def _start_build(started, ckpt: Path, cache: Path) -> tuple[subprocess.Popen, list[int]]:
    """A first-time build, caught while its workers write images; returns it and its workers' pids."""
    proc = started(ckpt, cache)
    assert _wait_until(lambda: _generating(cache) or proc.poll() is not None), "no build started"
    assert proc.poll() is None, proc.communicate()
    workers = _children(proc.pid)
    started.kids.extend(workers)
    assert workers, "the build runs no worker processes"
    return proc, workers


def _finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Exit code and stderr; fails (instead of hanging) when the pipes stay open past `timeout`."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {proc.pid} or a child of it still holds stdout/stderr after {timeout} s")
    return proc.returncode, err


def _assert_built(cache: Path) -> None:
    root = cache / "datasets" / "shapes-v2-64"
    assert (root / ".complete").is_file()
    assert len(list((root / "val").rglob("*.png"))) == 256
    assert _temp_folders(cache) == []  # no leftover of any builder


@pytest.mark.parametrize(
    "sig, to_group, code, line",
    [
        (signal.SIGTERM, False, 143, "error: terminated"),  # kill PID, docker stop
        (signal.SIGTERM, True, 143, "error: terminated"),  # timeout, systemd: the workers get it too
        (signal.SIGINT, True, 130, "error: interrupted"),  # Ctrl-C in a terminal
    ],
    ids=["sigterm", "sigterm-group", "ctrl-c"],
)
def test_a_stopped_build_exits_at_once_and_leaves_nothing_behind(
    started, ckpt, cache, sig, to_group, code, line
):
    proc, workers = _start_build(started, ckpt, cache)
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    exit_code, err = _finish(proc, timeout=30)
    assert exit_code == code, err
    assert err.strip().splitlines()[-1] == line, err
    assert "Traceback" not in err
    assert _wait_until(lambda: not any(_alive(w) for w in workers), timeout=10), "workers outlived the build"
    assert _temp_folders(cache) == []  # the build removed its own temp folder

    code, err = _finish(started(ckpt, cache))  # the next run builds the dataset and validates
    assert code == 0, err
    _assert_built(cache)


def test_sigkill_during_the_build_passes_the_lock_to_the_waiting_process(started, ckpt, cache, tmp_path):
    first, workers = _start_build(started, ckpt, cache)
    os.kill(first.pid, signal.SIGSTOP)  # hold the build unfinished while the second process comes
    log = tmp_path / "second.err"
    second = started(ckpt, cache, log)
    waiting = f"waiting for another optkit process (pid {first.pid}) that is generating builtin:shapes"
    # the second process says what it waits for while the first holds the lock
    assert _wait_until(lambda: second.poll() is not None or waiting in log.read_text())
    assert second.poll() is None, log.read_text()
    first.kill()  # SIGKILL: no cleanup runs in the first process
    _finish(first, timeout=30)  # its workers die with it and let go of its stdout/stderr
    assert _wait_until(lambda: not any(_alive(w) for w in workers), timeout=10), "workers outlived the build"
    code, _ = _finish(second)
    err = log.read_text()
    assert code == 0, err
    assert waiting in err and "generating builtin:shapes" in err and "Traceback" not in err
    _assert_built(cache)  # the killed builder's temp folder is gone too


def test_sigterm_while_waiting_for_the_lock_exits_143(started, ckpt, cache, tmp_path):
    first, _ = _start_build(started, ckpt, cache)
    os.kill(first.pid, signal.SIGSTOP)
    log = tmp_path / "second.err"
    second = started(ckpt, cache, log)
    assert _wait_until(lambda: second.poll() is not None or "waiting for" in log.read_text())
    second.send_signal(signal.SIGTERM)
    code, _ = _finish(second, timeout=30)
    err = log.read_text()
    assert code == 143 and err.strip().splitlines()[-1] == "error: terminated", err
    assert "Traceback" not in err
    first.kill()
    _finish(first, timeout=30)
