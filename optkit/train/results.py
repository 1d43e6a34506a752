"""results.csv (one row per epoch) and the run folder layout.

last.pt carries the rows too (`train_state["results"]`), and the trainer writes last.pt before
results.csv: results.csv is never ahead of last.pt, and where its write failed (a full disk) a resume
takes the rows from last.pt and writes results.csv again (`restore_results`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from optkit.io import atomic_write_text


def columns(metric_keys, loss_names=("loss",)) -> tuple[str, ...]:
    """results.csv's columns: the task's losses (optkit.tasks; `loss` for a classifier, box/cls/dfl for
    a detector) on train then val, then its metrics (top1, top5 for a classifier), the learning rates."""
    losses = (*(f"train_{n}" for n in loss_names), *(f"val_{n}" for n in loss_names))
    return ("epoch", *losses, *metric_keys, "lr_weights", "lr_norm", "lr_bias", "time")


def format_row(row: dict, cols: tuple[str, ...]) -> dict:
    """Fixed formatting so identical runs give identical text (time excepted)."""
    out = {}
    for key in cols:
        v = row[key]
        out[key] = str(v) if key == "epoch" else f"{v:.3f}" if key == "time" else f"{v:.8g}"
    return out


def write_results(path: Path, rows: list[dict], cols: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_results(path: Path, up_to_epoch: int) -> list[dict]:
    """Rows with epoch <= up_to_epoch (1-based), so a resumed run never duplicates epochs."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= up_to_epoch
        ]


def next_run_dir(project: str | Path, name: str, exist_ok: bool) -> Path:
    """project/name, or project/name2, name3, ... when it exists (unless exist_ok)."""
    base = Path(project) / name
    if exist_ok or not base.exists():
        return base
    n = 2
    while (Path(project) / f"{name}{n}").exists():
        n += 1
    return Path(project) / f"{name}{n}"


def carried_rows(train_state: dict | None, epochs_done: int, cols: tuple[str, ...]) -> list[dict] | None:
    """The rows a last.pt carries for its epochs 1..epochs_done, or None where it carries none (a
    last.pt of an older optkit) or they are not whole and well formed (file data: checked here)."""
    rows = (train_state or {}).get("results")
    if not isinstance(rows, list) or len(rows) != epochs_done:
        return None
    for epoch, row in enumerate(rows, start=1):
        well_formed = isinstance(row, dict) and set(row) == set(cols)
        if not well_formed or not all(isinstance(v, str) for v in row.values()) or row["epoch"] != str(epoch):
            return None
    return [dict(row) for row in rows]


def restore_results(
    path: Path, train_state: dict | None, epochs_done: int, cols: tuple[str, ...]
) -> list[dict]:
    """The rows of the epochs last.pt holds, for a run that continues: last.pt's own (results.csv is
    written again from them when it lacks any, e.g. after its write failed), else results.csv's."""
    rows = carried_rows(train_state, epochs_done, cols)
    if rows is None:
        return read_results(path, up_to_epoch=epochs_done)
    if read_results(path, up_to_epoch=epochs_done) != rows:
        write_results(path, rows, cols)
    return rows
