"""Print `make demo`'s comparison table: one row per artifact the pipeline produced.

Usage: python scripts/demo_table.py --data builtin:shapes STAGE=PATH [STAGE=PATH ...]
(`optkit benchmark` takes this over once it exists.)
"""

from __future__ import annotations

import argparse
import json
import sys

from optkit.measure.describe import describe_checkpoint
from optkit.measure.validate import validate_checkpoint
from optkit.report.console import mb, out, pct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this JSON file")
    parser.add_argument("artifacts", nargs="+", help="STAGE=PATH")
    args = parser.parse_args()
    rows = []
    for item in args.artifacts:
        stage, _, path = item.partition("=")
        facts = describe_checkpoint(path)
        acc = validate_checkpoint(path, args.data)
        rows.append(
            {
                "stage": stage,
                "path": path,
                "file_bytes": facts["file_bytes"],
                "params": facts["params"],
                "precision": facts["precision"],
                "top1": acc["top1"],
                "top5": acc["top5"],
                "val_images_per_s": acc["images_per_s"],
            }
        )
    _print(rows, args.data)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _print(rows: list[dict], data: str) -> None:
    from rich.table import Table

    table = Table(title=f"optkit demo: every stage on {data}")
    for col in ("stage", "artifact", "size", "params", "precision", "top-1", "top-5", "val img/s"):
        table.add_column(col, justify="left" if col in ("stage", "artifact", "precision") else "right")
    for r in rows:
        table.add_row(
            r["stage"],
            r["path"],
            mb(r["file_bytes"]),
            f"{r['params']:,}",
            r["precision"],
            pct(r["top1"]),
            pct(r["top5"]),
            f"{r['val_images_per_s']:,.0f}",
        )
    out().print(table)


if __name__ == "__main__":
    sys.exit(main())
