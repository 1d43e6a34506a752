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
    rows = [
        ("run", r["save_dir"]),
        ("best", f"{r['best']} (epoch {r['best_epoch']})"),
        ("top-1", f"float {pct(r['float_top1'])}, PTQ {pct(r['ptq_top1'])}, QAT {pct(r['qat_top1'])}"),
        (
            "recovered",
            f"{(r['qat_top1'] - r['ptq_top1']) * 100:+.2f} pp vs PTQ, "
            f"{(r['qat_top1'] - r['float_top1']) * 100:+.2f} pp vs float",
        ),
        ("loss", "cross-entropy + KL to the float model" if r["distill"] else "cross-entropy"),
        ("time", f"{r['seconds']:.1f} s, {r['epochs_run']} epochs"),
    ]
    rows += [("note", note) for note in r.get("notes", [])]
    out().print(kv_table(f"optkit qat  {r['source']}", rows))
