"""What `optkit models` prints: the model registry as one table."""

from __future__ import annotations

from optkit.report.console import out


def print_models(r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"optkit models (params at {r['num_classes']} classes)")
    for col in ("name", "params", "imgsz", "stride", "description"):
        table.add_column(col, justify="right" if col in ("params", "imgsz", "stride") else "left")
    for m in r["models"]:
        table.add_row(
            m["name"], f"{m['params']:,}", str(m["default_imgsz"]), str(m["stride"]), m["description"]
        )
    out().print(table)
