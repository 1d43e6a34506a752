"""What `optkit val` prints: one row, with a column per metric of the model's task; for a detector of
several classes, a row per class below it (images, instances, P, R, mAP50, mAP50-95)."""

from __future__ import annotations

from optkit.report.console import out, pct


def print_val(r: dict) -> None:
    from rich.table import Table

    from optkit.tasks import get_task

    metrics = get_task(r["task"]).metrics  # classify: top-1, top-5; detect: P, R, mAP50, mAP50-95
    table = Table(title=f"optkit val  {r['weights']}")
    for col in ("data", "images", "imgsz", *(m.label for m in metrics), "loss", "img/s"):
        table.add_column(col, justify="right" if col != "data" else "left")
    table.add_row(
        r["data"],
        str(r["images"]),
        str(r["imgsz"]),
        *(_figure(r[m.key], m.percent) for m in metrics),
        "-" if r.get("loss") is None else f"{r['loss']:.4f}",
        f"{r['images_per_s']:,.0f}",
    )
    out().print(table)
    if r.get("note"):  # e.g. an ONNX file with NMS in its graph (optkit.workflows.val)
        out().print(f"note: {r['note']}")
    per_class = r.get("per_class") or []
    if len(per_class) > 1:
        out().print(_per_class_table(per_class))


def _figure(value, percent: bool) -> str:
    if value is None:
        return "-"
    return pct(value) if percent else f"{value:.3f}"


def _per_class_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="per class")
    for col in ("class", "images", "instances", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["images"]),
            str(row["instances"]),
            *(_figure(row.get(k), False) for k in ("precision", "recall", "map50", "map")),
        )
    return table
