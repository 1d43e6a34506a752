"""What `optkit export` prints."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out, pct


def print_export(r: dict) -> None:
    out().print(kv_table(f"optkit export  {r['source']}", export_rows(r)))


def export_rows(r: dict) -> list[tuple[str, str]]:
    shape = "x".join(str(d) for d in r["input_shape"])
    rows = [
        ("output", r["output"]),
        ("format", f"ONNX opset {r['opset']}, {'float16' if r['half'] else 'float32'}"),
        ("input", f"images {shape}" + (" (dynamic batch, height, width)" if r["dynamic"] else "")),
        ("size", mb(r["bytes"])),
        ("graph", _graph(r)),
        ("export time", f"{r['export_s']:.2f} s"),
    ]
    if r["atol"] is None:
        rows.append(("check", "skipped (--no-check)"))
    else:
        for case in r["cases"]:
            rows.append((_case_label(case), _case_text(case)))
        rows.append(("tolerance", f"max |Δ| <= {r['atol']:g} of the output scale: passed"))
    meta = r["metadata"]
    rows.append(("metadata", ", ".join(meta) if meta else "none"))
    return rows


def _graph(r: dict) -> str:
    if r["simplified"]:
        return f"onnxslim: {r['nodes_before']} -> {r['nodes_after']} nodes"
    if r["simplify_error"]:
        return f"{r['nodes_after']} nodes, unsimplified: onnxslim failed ({r['simplify_error']})"
    return f"{r['nodes_after']} nodes (not simplified)"


def _case_label(case: dict) -> str:
    if case["input"] == "val":
        return f"vs PyTorch, {case['shape'][0]} val images"
    return "vs PyTorch, random " + "x".join(str(d) for d in case["shape"])


def _case_text(case: dict) -> str:
    return (
        f"max |Δ| {case['max_abs']:.3g} ({case['max_rel']:.3g} of output scale), "
        f"top-1 agreement {pct(case['top1_agreement'])}"
    )
