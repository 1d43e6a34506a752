"""What `optkit benchmark` prints and writes: a table, CSV, and an accuracy-vs-latency plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from optkit.io import atomic_open, atomic_write_text
from optkit.report.console import mb, out, pct

CSV_COLUMNS = (
    "path",
    "format",
    "file_bytes",
    "params",
    "gflops",
    "top1",
    "top5",
    "latency_ms",
    "p90_ms",
    "speedup",
)


def print_benchmark(r: dict) -> None:
    from rich.table import Table

    threads = f", {r['threads']} threads" if r["threads"] else ""
    table = Table(
        title=f"optkit benchmark  imgsz {r['imgsz']}, batch {r['batch']}, median of {r['runs']} runs{threads}"
    )
    for col in ("artifact", "format", "size", "params", "GFLOPs", "top-1", "latency", "speed-up"):
        table.add_column(col, justify="left" if col in ("artifact", "format") else "right")
    for row in r["rows"]:
        gflops = "n/a" if row["gflops"] is None else f"{row['gflops']:.4g}"
        table.add_row(
            row["path"],
            row["format"],
            mb(row["file_bytes"]),
            f"{row['params']:,}",
            gflops,
            pct(row["top1"]),
            f"{row['latency_ms']:.2f} ms",
            f"{row['speedup']:.2f}x",
        )
    out().print(table)


def write_csv(r: dict, path: str | Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(r["rows"])
    atomic_write_text(path, buf.getvalue())


def write_plot(r: dict, path: str | Path) -> None:
    """Accuracy (top-1, when measured) against median latency, one labelled point per artifact."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    have_top1 = all(row["top1"] is not None for row in r["rows"])
    for row in r["rows"]:
        y = 100 * row["top1"] if have_top1 else row["speedup"]
        ax.scatter(row["latency_ms"], y, s=40)
        ax.annotate(
            Path(row["path"]).name,
            (row["latency_ms"], y),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    ax.set_xlabel(f"median latency, ms (batch {r['batch']}, imgsz {r['imgsz']})")
    ax.set_ylabel("val top-1, %" if have_top1 else "speed-up vs first artifact")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
