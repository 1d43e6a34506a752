"""What `optkit deploy` prints: one row per candidate measured (the fp32 baseline first), its accuracy of
the exported file, drop, latency and paired speed-up against fp32, size, and which one was chosen."""

from __future__ import annotations

from optkit.report.console import mb, out


def print_deploy(r: dict) -> None:
    from rich.table import Table

    metric = r["metric"]
    at = f"{r['latency_imgsz']} px" + (
        "" if r["latency_imgsz"] == r["imgsz"] else f" (accuracy at {r['imgsz']} px)"
    )
    title = f"optkit deploy  {r['source']}  --target {r['target']}  --max-drop {r['max_drop']:g}"
    title += f"  latency at {at}"
    table = Table(title=title)
    for col in ("", "candidate", metric["label"], "drop", "ms", "vs fp32", "size", "within", "reused"):
        table.add_column(col, justify="left" if col in ("", "candidate") else "right")
    for row in r["candidates"]:
        table.add_row(*_row(row, r, metric))
    out().print(table)
    if r.get("output"):
        line = f"wrote {r['output']}  (work folder {r['work']}: candidates.csv, candidates.json, pareto.png)"
        out().print(line, markup=False, highlight=False)
    for note in r.get("notes", []):
        out().print(f"note: {note}", markup=False, highlight=False)


def _row(row: dict, r: dict, metric: dict) -> list[str]:
    mark = "*" if row["key"] == r["chosen"] else ""
    reused = "yes" if row.get("reused") else ""
    if row["status"] != "ok":
        return [mark, row["label"], "failed", "", "", "", "", "", reused]
    value = row["fitness"]
    figure = f"{100 * value:.2f}%" if metric["percent"] else f"{value:.4f}"
    base = row is r["candidates"][0]
    return [
        mark,
        row["label"] + (" (baseline)" if base else ""),
        figure,
        "" if base else f"{row['drop']:.2f}",
        f"{row['latency_ms']:.3f}",
        "1.00x" if base else f"{row['speedup']:.2f}x",
        mb(row["bytes"]),
        "" if base else ("yes" if row["within"] else "no"),
        reused,
    ]
