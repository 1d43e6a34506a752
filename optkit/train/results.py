"""results.csv (one row per epoch) and the run folder layout."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from optkit.io import atomic_write_text

COLUMNS = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr_weights", "lr_norm", "lr_bias", "time")


def format_row(row: dict) -> dict:
    """Fixed formatting so identical runs give identical text (time excepted)."""
    out = {}
    for key in COLUMNS:
        v = row[key]
        out[key] = str(v) if key == "epoch" else f"{v:.3f}" if key == "time" else f"{v:.8g}"
    return out


def write_results(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
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
