"""What `ptq-calibrate` and `qat` print."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out, pct

SENSITIVITY_ROWS = 15  # most sensitive layers shown (all are in --json)


TOP1 = {"key": "top1", "label": "top-1", "percent": True}  # what a result without `shown` compared


def _bias_correction(b: dict) -> str:
    """optkit.quant.bias_correction's figures."""
    return (
        f"{b['layers']} layers' biases absorb their mean INT8 error (mean |shift| {b['mean_shift']:.2g}, "
        f"at most {b['max_relative_shift']:.1%} of a channel's output std)"
    )


def print_ptq(r: dict) -> None:
    """The summary; one row per compared metric (`shown`: a classifier's top-1; a detector's mAP50-95
    and mAP50), the float post-processing of a detector's head in "kept float"."""
    shown = r.get("shown") or [TOP1]
    rows = [
        ("output", r["output"]),
        ("quantized", f"{r['quantized_layers']} Conv/Linear layers, INT8 ({r['method']} calibration)"),
        ("calibration", f"{r['num_images']} images in {r['calibration_s']:.1f} s"),
        *((m["label"], _comparison(r, m)) for m in shown),
        ("fidelity", _fidelity(r)),
        ("kept float", _kept_float(r)),
        (
            "size",
            f"{mb(r['bytes_before'])} -> {mb(r['bytes_after'])} (fake-quant: weights stay fp32 until export)",
        ),
    ]
    if r.get("act"):
        m = shown[0]
        rows.insert(
            3,
            (
                "activation",
                f"swapped to {r['act']}: float {m['label']} {_figure(r['original_' + m['key']], m)} -> "
                f"{_figure(r['float_' + m['key']], m)} before quantization (qat recovers it)",
            ),
        )
    if r.get("auto_skipped") is not None:
        rows.insert(6 + len(shown) - 1, ("auto-skip", ", ".join(r["auto_skipped"]) or "nothing needed"))
    if r.get("bias_correction"):
        after = [key for key, _ in rows].index("calibration") + 1
        rows.insert(after, ("bias correction", _bias_correction(r["bias_correction"])))
    out().print(kv_table(f"optkit ptq-calibrate  {r['source']}", rows))
    if r.get("sensitivity"):
        _print_sensitivity(r["sensitivity"], shown[0])


def _figure(value, metric: dict) -> str:
    """A metric's value as the task shows it: a percentage (top-1) or a fraction (mAP, 4 decimals)."""
    if value is None or metric["percent"]:
        return pct(value)
    return f"{value:.4f}"


def _comparison(r: dict, metric: dict) -> str:
    """`float X -> INT8 Y (change)`: the change in percentage points (a percentage) or points
    (hundredths of a fraction such as mAP: the unit of --auto-skip)."""
    f, q = r[f"float_{metric['key']}"], r[f"int8_{metric['key']}"]
    if q is None:
        change = "no task of optkit scores this model: compared by SQNR only"
    else:
        change = f"{(q - f) * 100:+.2f} {'pp' if metric['percent'] else 'points'}"
    return f"float {_figure(f, metric)} -> INT8 {_figure(q, metric)} ({change})"


def _fidelity(r: dict) -> str:
    """A detector's SQNR of boxes and of scores (no single answer per image to agree on); else the task's
    top-1 agreement and the output SQNR."""
    if r.get("top1_agreement") is None and "sqnr_boxes_db" in r:
        return (
            f"SQNR boxes {r['sqnr_boxes_db']:.1f} dB, class scores {r['sqnr_scores_db']:.1f} dB "
            f"(decoded outputs; all outputs {r['sqnr_db']:.1f} dB)"
        )
    return f"top-1 agreement {pct(r['top1_agreement'])}, output SQNR {r['sqnr_db']:.1f} dB"


def _kept_float(r: dict) -> str:
    """The head's post-processing (a detector's) and the skipped layers; "none" when there are neither."""
    skipped = ", ".join(r["skipped"])
    scope = r.get("float_scope")
    if not scope:
        return skipped or "none"

    def named(module: str) -> str:  # a module, with the Conv/Linear layers in it that stay float
        inside = [layer for layer in scope["layers"] if layer.startswith(module + ".")]
        return f"{module} with {', '.join(inside)}" if inside else module

    text = f"post-processing of {scope['head']}: {scope['ops'] or 'its decode'}"
    if scope["modules"]:
        text += f" (modules: {', '.join(map(named, scope['modules']))})"
    return text + (f"; layers: {skipped}" if skipped else "")


def _print_sensitivity(rows: list[dict], metric: dict) -> None:
    from rich.table import Table

    parts = [k for k in rows[0] if k.startswith("sqnr_") and k != "sqnr_db"]  # a detector's boxes, scores
    table = Table(title="Per-layer sensitivity (only that layer quantized; most sensitive first)")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("SQNR dB", justify="right")
    for key in parts:
        table.add_column(key.removeprefix("sqnr_").removesuffix("_db"), justify="right")
    table.add_column(metric["label"], justify="right")
    for i, row in enumerate(rows[:SENSITIVITY_ROWS], 1):
        sqnr = [("-" if row[k] is None else f"{row[k]:.1f}") for k in ("sqnr_db", *parts)]
        value = row.get(metric["key"])
        table.add_row(str(i), row["layer"], *sqnr, "-" if value is None else _figure(value, metric))
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
