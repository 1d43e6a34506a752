"""What the file-to-file stages (strip, fuse, prune) print."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out, pct


def print_strip(r: dict) -> None:
    ratio = r["bytes_after"] / r["bytes_before"]
    out().print(
        kv_table(
            f"optkit strip  {r['source']}",
            [
                ("output", r["output"]),
                ("size", f"{mb(r['bytes_before'])} -> {mb(r['bytes_after'])} ({ratio:.0%} of before)"),
                ("dropped", ", ".join(r["dropped"]) or "nothing (already stripped)"),
                ("precision", "float16" if r["half"] else "unchanged"),
            ],
        )
    )


def print_fuse(r: dict) -> None:
    rows = [("output", r["output"]), ("fused", f"{len(r['fused'])} conv/linear + BN pairs")]
    for name, why in r["bn_left"].items():
        rows.append((f"BN left: {name}", why))
    if r["max_abs"] is None:
        rows.append(("check", "skipped (--no-check)"))
    else:
        rows.append(("max |Δ|", f"{r['max_abs']:.3g} abs, {r['max_rel']:.3g} relative to output scale"))
    rows.append(("params", f"{r['params_before']:,} -> {r['params_after']:,}"))
    out().print(kv_table(f"optkit fuse  {r['source']}", rows))


def print_prune(r: dict) -> None:
    rows = [("output", r["output"]), ("method", r["method"])]
    if r.get("channels_removed") is not None:  # structured: --amount is a fraction of channels
        rows.append(("channels", _channels_removed(r["amount"], r["channels_removed"])))
        rows.append(("weights", f"removed {pct(r['achieved'], 2)} of prunable weights"))
    else:
        achieved = f"achieved {pct(r['achieved'], 2)} of prunable weights"
        rows.append(("sparsity", f"target {pct(r['amount'], 1)}, {achieved}"))
    rows.append(("params", f"{r['params_before']:,} -> {r['params_after']:,}"))
    if r.get("gflops_before") is not None:
        rows.append(("GFLOPs", f"{r['gflops_before']:.4g} -> {r['gflops_after']:.4g}"))
    if r.get("latency_before_ms") is not None:
        ratio = r["latency_after_ms"] / r["latency_before_ms"]
        rows.append(
            (
                "latency (CPU)",
                f"{r['latency_before_ms']:.2f} -> {r['latency_after_ms']:.2f} ms ({ratio:.2f}x)",
            )
        )
    for when, words in (("before", "before"), ("pruned", "pruned"), ("finetuned", "fine-tuned")):
        measured = r.get(f"metrics_{when}")
        if measured is not None:  # one row per stage: "top-1 before", "mAP50-95 / mAP50 pruned"
            rows.append(_metrics_row(r["metrics"], measured, words))
    rows.append(("size", f"{mb(r['bytes_before'])} -> {mb(r['bytes_after'])}"))
    out().print(kv_table(f"optkit prune  {r['source']}", rows))
    if r.get("layers"):
        out().print(_layer_table(r["layers"]))


def _metrics_row(shown: list[dict], measured: dict, when: str) -> tuple[str, str]:
    """The shown metrics of one measurement (a classifier's top-1 as a percentage, a detector's
    mAP50-95 / mAP50 as fractions, as `optkit val` prints them)."""
    labels = " / ".join(m["label"] for m in shown)
    values = " / ".join(_figure(measured[m["key"]], m["percent"]) for m in shown)
    return f"{labels} {when}", values


def _figure(value: float | None, percent: bool) -> str:
    if value is None:
        return "n/a"
    return pct(value) if percent else f"{value:.3f}"


def _channels_removed(amount: float, removed: float) -> str:
    text = f"target {pct(amount, 1)}, removed {pct(removed, 2)}"
    if removed < amount - 0.0005:  # below target by more than the 0.1% shown: layers hit their floor
        text += " (less: each layer keeps at least --round-to channels)"
    return text


def _layer_table(layers: dict):
    from rich.table import Table

    table = Table(title="per layer (prunable weights)")
    for col in ("layer", "zeros", "total", "sparsity"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for name, (zeros, total) in layers.items():
        table.add_row(name, f"{zeros:,}", f"{total:,}", pct(zeros / total if total else 0.0, 1))
    return table
