"""What `optkit val` prints."""

from __future__ import annotations

from optkit.report.console import out, pct


def print_val(r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"optkit val  {r['weights']}")
    for col in ("data", "images", "imgsz", "top-1", "top-5", "loss", "img/s"):
        table.add_column(col, justify="right" if col != "data" else "left")
    table.add_row(
        r["data"],
        str(r["images"]),
        str(r["imgsz"]),
        pct(r["top1"]),
        pct(r["top5"]),
        f"{r['loss']:.4f}",
        f"{r['images_per_s']:,.0f}",
    )
    out().print(table)
