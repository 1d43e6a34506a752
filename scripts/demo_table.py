"""Print `make demo`'s comparison table: one row per artifact the pipeline produced.

Usage: python scripts/demo_table.py --data builtin:shapes STAGE=PATH [STAGE=PATH ...]
(`optkit benchmark` takes this over once it exists.)
"""

from __future__ import annotations

import argparse
import json
import sys

from optkit.checkpoint import build_model, load_checkpoint
from optkit.measure.describe import describe_checkpoint
from optkit.measure.flops import count_flops
from optkit.measure.latency import measure_latency
from optkit.measure.validate import validate_checkpoint
from optkit.report.console import mb, out, pct

COLUMNS = (
    "stage",
    "artifact",
    "size",
    "params",
    "GFLOPs",
    "precision",
    "top-1",
    "top-5",
    "latency b1",
    "speed-up",
)


def measure(stage: str, path: str, data: str) -> dict:
    facts = describe_checkpoint(path)
    acc = validate_checkpoint(path, data)
    model = build_model(load_checkpoint(path))
    return {
        "stage": stage,
        "path": path,
        "file_bytes": facts["file_bytes"],
        "params": facts["params"],
        "precision": facts["precision"],
        "top1": acc["top1"],
        "top5": acc["top5"],
        "gflops": count_flops(model, facts["imgsz"]),
        "latency_ms": measure_latency(model, facts["imgsz"], batch=1, warmup=10, runs=50)[
            "median_ms"
        ],  # eager CPU
    }


def print_table(rows: list[dict], data: str) -> None:
    from rich.table import Table

    table = Table(title=f"optkit demo: every stage on {data} (latency: PyTorch eager, batch 1)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("stage", "artifact", "precision") else "right")
    base = rows[0]["latency_ms"]
    for r in rows:
        gflops = "n/a" if r["gflops"] is None else f"{r['gflops']:.4f}"
        table.add_row(
            r["stage"],
            r["path"],
            mb(r["file_bytes"]),
            f"{r['params']:,}",
            gflops,
            r["precision"],
            pct(r["top1"]),
            pct(r["top5"]),
            f"{r['latency_ms']:.2f} ms",
            f"{base / r['latency_ms']:.2f}x",
        )
    out().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this JSON file")
    parser.add_argument("artifacts", nargs="+", help="STAGE=PATH")
    args = parser.parse_args()
    rows = [measure(*item.split("=", 1), args.data) for item in args.artifacts]
    print_table(rows, args.data)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
