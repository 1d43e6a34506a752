"""Atomic writes (optkit/io.py): old file or new file, never half of one; leftovers of killed writers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from optkit.io import atomic_open, atomic_write_text, remove_stale_temps, temp_path_for


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists (until the system reuses it)
    return proc.pid


def test_temp_name_records_the_writer_and_hides_from_globs(tmp_path):
    tmp = temp_path_for(tmp_path / "last.pt")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(f".last.pt.{os.getpid()}.") and tmp.name.endswith(".tmp")
    assert not list(tmp_path.glob("*.pt"))


def test_stale_temps_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.{_dead_pid()}.0123456789ab.tmp"
    other = tmp_path / f".best.pt.{_dead_pid()}.0123456789ab.tmp"  # another target in the same folder
    live = tmp_path / f".last.pt.{os.getppid()}.0123456789ab.tmp"  # our parent's: alive, maybe writing
    foreign = tmp_path / ".last.pt.12.notours.tmp"  # not an optkit temp name
    for p in (dead, other, live, foreign):
        p.write_bytes(b"half a checkpoint")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not dead.exists() and not other.exists()
    assert live.exists() and foreign.exists()
    assert remove_stale_temps(tmp_path) == []  # nothing stale is left


def test_failed_write_keeps_the_old_file_and_removes_its_temp_and_new_folders(tmp_path):
    old = tmp_path / "out.pt"
    old.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_open(old) as f:
        f.write(b"partial")
        raise KeyboardInterrupt
    assert old.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.pt"]

    deep = tmp_path / "a" / "b" / "out.pt"
    with pytest.raises(OSError), atomic_open(deep) as f:
        raise OSError("disk full")
    assert not (tmp_path / "a").exists()  # folders made for the output are removed too


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced descriptors")
@pytest.mark.parametrize("how", ["atomic_open", "atomic_path"])
def test_the_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch, how):
    """What a power loss needs: the file's data on disk before its name points at it, then the folder
    entry (the rename). Recorded by wrapping os.fsync and os.replace; atomic_path's callers (ONNX export)
    write the temp file themselves, without fsync."""
    from optkit.io import atomic_path

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    target = tmp_path / "model.onnx"
    if how == "atomic_open":
        with atomic_open(target) as f:
            f.write(b"data")
    else:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"data")
    kinds = [e[0] for e in events]
    assert (
        kinds[-2:] == ["replace", "fsync"]
        and events[-1][1] == str(tmp_path)
        and target.read_bytes() == b"data"
    )
    synced_before = [p for k, p in events[: kinds.index("replace")] if k == "fsync"]
    assert synced_before and all(os.path.basename(p).startswith(".model.onnx.") for p in synced_before)


def test_new_files_get_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "x.txt", "x")
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


class _InterruptedFile:
    """A file whose n-th write raises KeyboardInterrupt, as Ctrl-C does in the middle of torch.save."""

    def __init__(self, f, n: int):
        self.f, self.n, self.calls = f, n, 0

    def write(self, data):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.f.write(data)

    def flush(self):
        self.f.flush()


@pytest.mark.parametrize("n", [2, 8, 30, 55, 70])  # of 74 writes; most become RuntimeError in torch
def test_ctrl_c_inside_torch_save_is_reported_as_an_interrupt(tmp_path, n):
    """torch's zip writer turns an interrupt into RuntimeError('unexpected pos ...') while closing;
    atomic writes re-raise the KeyboardInterrupt, so commands say 'interrupted', not a crash."""
    import torch

    state = {f"w{i}": torch.randn(64, 64) for i in range(8)}
    target = tmp_path / "x.pt"
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as f:
        torch.save(state, _InterruptedFile(f, n))
    assert os.listdir(tmp_path) == []
