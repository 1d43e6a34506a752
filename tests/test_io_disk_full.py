"""A full disk (or a file size limit) while writing: one line that says so, the old output kept, no
temp file left, and `train` never has results.csv ahead of last.pt.

A full disk is simulated without root at the write seam: `open` in optkit.io (the temp file every
atomic write opens) and in optkit.stages.export (which writes its staged file itself) is replaced by a
file whose writes fail with ENOSPC after a byte budget, as a filling disk does; torch's zip writer then
raises its own "unexpected pos" RuntimeError, as on a real full disk. A real limit comes from
RLIMIT_FSIZE in a subprocess (the kernel answers EFBIG, not ENOSPC).
"""

from __future__ import annotations

import csv
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optkit.io
import optkit.stages.export
from optkit.errors import OptkitError

NAMES = ["blue", "green", "red"]


class _FillingFile:
    """A real file whose writes fail with ENOSPC once `budget` bytes are written (a filling disk)."""

    def __init__(self, f, budget: int):
        self.f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            self.f.write(data[: self.budget])
            self.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):  # flush, close, fileno, tell, ...
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(name_part, budget=1000, after=0)`: writes of temp files whose name contains
    `name_part` fail with ENOSPC after `budget` bytes, from the (after+1)-th such file on."""

    def fill(name_part: str, budget: int = 1000, after: int = 0):
        seen = {"n": 0}

        def opener(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if name_part not in Path(path).name:
                return f
            seen["n"] += 1
            return _FillingFile(f, budget) if seen["n"] > after else f

        for module in (optkit.io, optkit.stages.export):  # the export writes its staged file itself
            monkeypatch.setattr(module, "open", opener, raising=False)

    return fill


def _ckpt(path: Path) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    return save_checkpoint(checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32), path)


@pytest.mark.parametrize("old", [True, False], ids=["old-output", "no-old-output"])
def test_checkpoint_save_on_a_full_disk_says_so_and_keeps_the_old_file(tmp_path, full_disk, old):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    target = tmp_path / "out.pt"
    if old:
        target.write_bytes(b"the previous checkpoint")
    full_disk("out.pt")
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32)
    with pytest.raises(OptkitError) as e:
        save_checkpoint(ckpt, target)
    message = str(e.value)
    assert message.startswith(f"no space left on {tmp_path} "), message
    assert ("previous out.pt is unchanged" if old else "nothing was written") in message, message
    assert os.listdir(tmp_path) == (["out.pt"] if old else [])  # no temp file left
    if old:
        assert target.read_bytes() == b"the previous checkpoint"


def test_text_writes_on_a_full_disk_say_so(tmp_path, full_disk):
    full_disk("results.csv", budget=3)
    with pytest.raises(OptkitError, match=f"no space left on {tmp_path}"):
        optkit.io.atomic_write_text(tmp_path / "results.csv", "epoch,top1\n1,0.5\n")
    assert os.listdir(tmp_path) == []


def test_torch_writer_error_without_errno_is_read_from_the_free_space(tmp_path, monkeypatch):
    """Where torch's writer reports only "unexpected pos" (no OSError behind it), the free space
    decides: nearly none is a full disk; plenty means another failure, which passes unchanged."""
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    class Stat:
        f_frsize = 4096
        f_bfree = f_bavail = 0

    monkeypatch.setattr(torch, "save", failing_save)
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32)
    real_statvfs = os.statvfs
    monkeypatch.setattr(optkit.io.os, "statvfs", lambda folder: Stat())
    with pytest.raises(OptkitError, match="no space left on"):
        save_checkpoint(ckpt, tmp_path / "x.pt")
    monkeypatch.setattr(optkit.io.os, "statvfs", real_statvfs)
    if real_statvfs(tmp_path).f_bavail * real_statvfs(tmp_path).f_frsize > optkit.io.LOW_SPACE_BYTES:
        with pytest.raises(RuntimeError, match="unexpected pos"):
            save_checkpoint(ckpt, tmp_path / "x.pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "command, args, output",
    [
        ("fuse", ["fuse", "{C}", "-o", "{O}"], "out.pt"),
        ("strip", ["strip", "{C}", "-o", "{O}"], "out.pt"),
        ("prune", ["prune", "{C}", "--amount", "0.3", "-o", "{O}"], "out.pt"),
        ("export", ["export", "{C}", "-o", "{O}"], "out.onnx"),
    ],
)
def test_stage_commands_on_a_full_disk(cli, tmp_path, full_disk, command, args, output):
    ckpt = _ckpt(tmp_path / "m.pt")
    out = tmp_path / "outputs" / output
    out.parent.mkdir()
    out.write_bytes(b"the previous output")
    full_disk(output)
    r = cli(*[a.replace("{C}", str(ckpt)).replace("{O}", str(out)) for a in args])
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1, r.err
    assert lines[0].startswith(f"error: no space left on {out.parent} "), lines[0]
    assert out.read_bytes() == b"the previous output" and os.listdir(out.parent) == [output]


@pytest.mark.slow
def test_a_file_size_limit_is_reported_as_file_too_large(tmp_path):
    """A real limit, no simulation: RLIMIT_FSIZE in the child makes the kernel refuse the write (EFBIG)."""
    ckpt = _ckpt(tmp_path / "m.pt")
    out = tmp_path / "out.pt"
    out.write_bytes(b"the previous output")
    limit = ckpt.stat().st_size // 4  # bytes: the fused checkpoint cannot fit

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(
        [sys.executable, "-m", "optkit", "fuse", str(ckpt), "-o", str(out)],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: cannot write {out}: file too large"), lines[0]
    assert "previous out.pt is unchanged" in lines[0], lines[0]
    assert out.read_bytes() == b"the previous output" and sorted(os.listdir(tmp_path)) == ["m.pt", "out.pt"]


# ---- train: results.csv never ahead of last.pt, and resume stays exact -----------------------------


def _cfg(tmp_path, data, **kw):
    from optkit.train.config import TrainConfig

    base = dict(
        model="test-tiny", data=str(data), epochs=3, imgsz=32, batch_size=16, workers=0,
        project=str(tmp_path / "runs"), name="exp", warmup_epochs=0.0, seed=3,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "failing, after",
    [(".last.pt.", 1), ("results.csv", 1)],
    ids=["last.pt-of-epoch-2", "results.csv-of-epoch-2"],
)
def test_train_on_a_full_disk_keeps_results_and_last_pt_in_step(
    tmp_path, tiny_data, monkeypatch, full_disk, failing, after
):
    from optkit.checkpoint import load_checkpoint
    from optkit.train.config import TrainConfig
    from optkit.train.trainer import Trainer

    straight = Trainer(_cfg(tmp_path, tiny_data, name="straight")).run()
    full_disk(failing, budget=10, after=after)  # epoch 1 is written, epoch 2's write fails
    with pytest.raises(OptkitError, match="no space left on") as e:
        Trainer(_cfg(tmp_path, tiny_data, name="full")).run()
    run = tmp_path / "runs" / "full"
    last = load_checkpoint(run / "weights" / "last.pt")
    held = f"last.pt holds epoch {last.epoch + 1} (continue with: optkit train --resume "
    assert held in str(e.value), e.value  # what was kept, and how to go on
    rows = _rows(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) <= last.epoch + 1  # never a row for an epoch last.pt does not hold

    monkeypatch.setattr(optkit.io, "open", open)  # the disk has room again
    resumed = Trainer(TrainConfig(resume_from=str(run / "weights" / "last.pt"), workers=0)).run()
    assert resumed.finished and resumed.epoch == 3
    assert _rows(run / "results.csv") == _rows(straight.save_dir / "results.csv")
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in a.model:
        assert torch.allclose(a.model[key].float(), b.model[key].float(), atol=1e-6, rtol=0), key


def test_rows_carried_by_last_pt_are_used_only_when_whole_and_well_formed(tmp_path):
    """last.pt is file data: rows that are missing, short, out of order or of the wrong types are
    ignored (results.csv is read instead), never trusted."""
    from optkit.train.results import carried_rows, columns, restore_results, write_results

    COLUMNS = columns(("top1", "top5"))  # a classifier's

    def row(epoch):
        return {k: (str(epoch) if k == "epoch" else "0.5") for k in COLUMNS}

    good = [row(1), row(2)]
    assert carried_rows({"results": good}, 2, COLUMNS) == good
    bad_states = [
        None, {}, {"results": "rows"}, {"results": good[:1]}, {"results": [row(2), row(1)]},
        {"results": [row(1), {**row(2), "top1": 0.5}]}, {"results": [row(1), {"epoch": "2"}]},
    ]  # fmt: skip
    for bad in bad_states:
        assert carried_rows(bad, 2, COLUMNS) is None, bad

    csv_path = tmp_path / "results.csv"
    write_results(csv_path, good[:1], COLUMNS)  # the write of epoch 2's row failed
    assert restore_results(csv_path, {"results": good}, 2, COLUMNS) == good
    assert [r["epoch"] for r in csv.DictReader(open(csv_path))] == ["1", "2"]  # written again
    write_results(csv_path, good[:1], COLUMNS)
    assert restore_results(csv_path, None, 2, COLUMNS) == good[:1]  # an older last.pt: results.csv as it is
