"""What `ptq-calibrate` and `qat` print."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out, pct

SENSITIVITY_ROWS = 15  # most sensitive layers shown (all are in --json)


def print_ptq(r: dict) -> None:
    rows = [
        ("output", r["output"]),
        ("quantized", f"{r['quantized_layers']} Conv/Linear layers, INT8 ({r['method']} calibration)"),
        ("calibration", f"{r['num_images']} images in {r['calibration_s']:.1f} s"),
        ("top-1", f"float {pct(r['float_top1'])} -> INT8 {pct(r['int8_top1'])} ({_drop(r)})"),
        ("fidelity", f"top-1 agreement {pct(r['top1_agreement'])}, output SQNR {r['sqnr_db']:.1f} dB"),
        ("kept float", ", ".join(r["skipped"]) or "none"),
        (
            "size",
            f"{mb(r['bytes_before'])} -> {mb(r['bytes_after'])} (fake-quant: weights stay fp32 until export)",
        ),
    ]
    if r.get("act"):
        rows.insert(
            3,
            (
                "activation",
                f"swapped to {r['act']}: float top-1 {pct(r['original_top1'])} -> "
                f"{pct(r['float_top1'])} before quantization (qat recovers it)",
            ),
        )
    if r.get("auto_skipped") is not None:
        rows.insert(6, ("auto-skip", ", ".join(r["auto_skipped"]) or "nothing needed"))
    out().print(kv_table(f"optkit ptq-calibrate  {r['source']}", rows))
    if r.get("sensitivity"):
        _print_sensitivity(r["sensitivity"])


def _drop(r: dict) -> str:
    if r["int8_top1"] is None:
        return "not a classifier: compared by SQNR only"
    return f"{(r['int8_top1'] - r['float_top1']) * 100:+.2f} pp"


def _print_sensitivity(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Per-layer sensitivity (only that layer quantized; most sensitive first)")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("SQNR dB", justify="right")
    table.add_column("top-1", justify="right")
    for i, row in enumerate(rows[:SENSITIVITY_ROWS], 1):
        sqnr = "-" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
        top1 = "-" if row["top1"] is None else pct(row["top1"])
        table.add_row(str(i), row["layer"], sqnr, top1)
    if len(rows) > SENSITIVITY_ROWS:
        table.caption = f"{len(rows) - SENSITIVITY_ROWS} more in --json"
    out().print(table)


def print_qat(r: dict) -> None:
    """Float / PTQ / QAT figures of the metrics the result names in `shown` (a classifier's top-1; a
    detector's mAP50-95 and mAP50), then the change QAT made, in pp (percentages) or points (x 100)."""
    shown = r.get("shown") or [{"key": "top1", "label": "top-1", "percent": True}]
    rows = [("run", r["save_dir"]), ("best", f"{r['best']} (epoch {r['best_epoch']})")]
    for m in shown:
        f, p, q = (r[f"{stage}_{m['key']}"] for stage in ("float", "ptq", "qat"))
        rows.append(
            (m["label"], f"float {_qat_figure(f, m)}, PTQ {_qat_figure(p, m)}, QAT {_qat_figure(q, m)}")
        )
    key = shown[0]["key"]
    gained = (r[f"qat_{key}"] - r[f"ptq_{key}"]) * 100, (r[f"qat_{key}"] - r[f"float_{key}"]) * 100
    unit = "pp" if shown[0]["percent"] else f"points {shown[0]['label']}"
    rows += [
        ("recovered", f"{gained[0]:+.2f} {unit} vs PTQ, {gained[1]:+.2f} {unit} vs float"),
        ("loss", r.get("loss") or "cross-entropy" + (" + KL to the float model" if r["distill"] else "")),
    ]
    if r.get("distill_loss"):
        terms = " -> ".join(f"{v:.4g}" for v in r["distill_loss"])
        rows.append(("distillation", f"{terms} (mean term per batch, by epoch)"))
    rows.append(("time", f"{r['seconds']:.1f} s, {r['epochs_run']} epochs"))
    rows += [("note", note) for note in r.get("notes", [])]
    out().print(kv_table(f"optkit qat  {r['source']}", rows))


def _qat_figure(value, metric: dict) -> str:
    if value is None:
        return "n/a"
    return pct(value) if metric["percent"] else f"{value:.4f}"
