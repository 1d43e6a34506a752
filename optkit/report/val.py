"""What `optkit val` prints: one row, with a column per metric of the model's task."""

from __future__ import annotations

from optkit.report.console import out, pct


def print_val(r: dict) -> None:
    from rich.table import Table

    from optkit.tasks import get_task

    metrics = get_task(r["task"]).metrics  # classify: top-1, top-5
    table = Table(title=f"optkit val  {r['weights']}")
    for col in ("data", "images", "imgsz", *(m.label for m in metrics), "loss", "img/s"):
        table.add_column(col, justify="right" if col != "data" else "left")
    table.add_row(
        r["data"],
        str(r["images"]),
        str(r["imgsz"]),
        *(pct(r[m.key]) if m.percent else f"{r[m.key]:.4g}" for m in metrics),
        f"{r['loss']:.4f}",
        f"{r['images_per_s']:,.0f}",
    )
    out().print(table)
