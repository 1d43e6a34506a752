"""What `optkit info` prints: a checkpoint's figures under its task's names (top-1 for a classifier,
mAP50-95 and mAP50 for a detector; the flow's "figures" and "fitness")."""

from __future__ import annotations

from optkit.report.console import mb, out, pct


def print_info(r: dict) -> None:
    from rich.table import Table

    if r.get("format") == "foreign":
        print_foreign_info(r)
        return
    table = Table(title=f"optkit info  {r['path']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    options = ", ".join(f"{k}={v}" for k, v in r["arch_options"].items())
    table.add_row("arch", r["arch"] + (f" ({options})" if options else ""))
    if r["transforms"]:
        table.add_row("transforms", " -> ".join(r["transforms"]))
    table.add_row("task", r["task"])
    names = ", ".join(r["names"][:10]) + (", ..." if r["num_classes"] > 10 else "")
    table.add_row("classes", f"{r['num_classes']}: {names}")
    table.add_row("imgsz", str(r["imgsz"]))
    table.add_row("epoch", "n/a" if r["epoch"] is None else str(r["epoch"]))
    table.add_row("best fitness", _fitness_text(r["best_fitness"], r["fitness"]))
    if r["metrics"]:
        table.add_row("metrics", _metrics_text(r["metrics"], r["figures"]))
    table.add_row("params", f"{r['params']:,}")
    table.add_row("precision", r["precision"])
    table.add_row("carries", ", ".join(k for k, v in r["carries"].items() if v) or "weights only")
    table.add_row("file size", mb(r["file_bytes"]))
    table.add_row("written by", f"optkit {r['optkit_version']}  {r['date']}")
    for note in r.get("notes") or []:
        table.add_row("note", note)
    out().print(table)
    if r["lineage"]:
        out().print(_lineage_table(r["lineage"], r["headline"]))


def _figure(value: float, percent: bool) -> str:
    return pct(value) if percent else f"{value:.4f}"


def _fitness_text(value: float | None, fitness: dict) -> str:
    """ "98.62% val top-1", "0.6482 fitness (0.1 mAP50 + 0.9 mAP50-95)"."""
    if value is None:
        return "n/a"
    return f"{_figure(value, fitness['percent'])} {fitness['label']}"


def _metrics_text(metrics: dict, figures: list[dict]) -> str:
    """The task's figures by their labels, headline first ("mAP50-95 0.6120  mAP50 0.9030  P ..."), then
    the other numbers the checkpoint holds (loss) by their keys."""
    named = [f"{f['label']} {_figure(f['value'], f['percent'])}" for f in figures]
    keys = {f["key"] for f in figures}
    rest = [f"{k} {v:.4g}" for k, v in metrics.items() if k not in keys and isinstance(v, (int, float))]
    return "  ".join(named + rest)


def _lineage_table(lineage: list[dict], headline: list[dict]):
    from rich.table import Table

    table = Table(title="lineage")
    for col in ("#", "stage", "time", "metrics", "optkit"):
        table.add_column(col)
    for i, entry in enumerate(lineage, 1):
        metrics = entry.get("metrics") or {}
        shown = "  ".join(
            [
                f"{m['label']} {_figure(metrics[m['key']], m['percent'])}"
                for m in headline
                if isinstance(metrics.get(m["key"]), (int, float))
            ]
            + ([f"epoch {metrics['epoch']}"] if "epoch" in metrics else [])
        )
        table.add_row(
            str(i), entry.get("stage", "?"), entry.get("time", ""), shown, entry.get("optkit_version", "")
        )
    return table


def print_foreign_info(r: dict) -> None:
    """A trusted foreign checkpoint (YOLOv5 / Ultralytics layout)."""
    names = ", ".join(r["names"][:10]) + (", ..." if r["num_classes"] > 10 else "")
    where = {"ema": "the EMA ('ema')", "model": "'model'", None: "the file itself (a bare module)"}
    rows = [
        ("format", "foreign checkpoint (pickled nn.Module, loaded with --trust)"),
        ("module", f"{r['arch']}  from {where.get(r['module_key'], r['module_key'])}"),
        ("task", r["task"]),
        ("classes", f"{r['num_classes']}: {names}"),
        ("imgsz / stride", f"{r['imgsz']} / {r['stride']}"),
        ("epoch", "n/a (finished or stripped)" if r["epoch"] is None else str(r["epoch"])),
        ("best fitness", "n/a" if r["best_fitness"] is None else f"{r['best_fitness']:.4g}"),
        ("params", f"{r['params']:,}"),
        ("precision", r["precision"]),
        ("carries", ", ".join(k for k, v in r["carries"].items() if v) or "nothing"),
        ("keys", ", ".join(r["keys"]) or "-"),
        ("file size", mb(r["file_bytes"])),
        ("written by", " ".join(str(v) for v in (r["version"], r["date"]) if v) or "n/a"),
    ]
    from optkit.report.console import kv_table

    out().print(kv_table(f"optkit info  {r['path']}", rows))
    if r["lineage"]:
        out().print(_lineage_table(r["lineage"], r.get("headline") or []))
