"""What `optkit export` prints."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out, pct


def print_export(r: dict) -> None:
    out().print(kv_table(f"optkit export  {r['source']}", export_rows(r)))


def export_rows(r: dict) -> list[tuple[str, str]]:
    shape = "x".join(str(d) for d in r["input_shape"])
    rows = [
        ("output", r["output"]),
        ("format", f"{_container(r)}, {_precision(r)}"),
        ("input", f"images {shape}" + (" (dynamic batch, height, width)" if r["dynamic"] else "")),
        ("size", mb(r["bytes"])),
        ("graph", _graph(r)),
        ("export time", f"{r['export_s']:.2f} s"),
    ]
    if r["atol"] is None:
        rows.append(("check", "skipped (--no-check)"))
    else:
        for case in r["cases"]:
            rows.append((_case_label(case, r.get("images_source") or "val images"), _case_text(case)))
        if "nms" in r["metadata"] and not any(case["input"] == "nms" for case in r["cases"]):
            rows.append(("NMS check", "not run (no images)"))
        scale = "its scale (boxes and scores apart)" if _has_parts(r) else "the output scale"
        rows.append(("tolerance", f"max |Δ| <= {r['atol']:g} of {scale}: passed"))
    if r.get("outputs_note"):
        rows.append(("outputs", r["outputs_note"]))
    meta = r["metadata"]
    rows.append(("metadata", ", ".join(meta) if meta else "none"))
    if r.get("int8"):
        rows += _int8_rows(r["int8"])
    if r.get("format") == "openvino":
        rows += _openvino_rows(r)
    return rows


def _openvino_rows(r: dict) -> list[tuple[str, str]]:
    """The IR: where, its size, its check against the ONNX graph, its int8 convolutions."""
    ir = r["openvino"]
    rows = [
        ("OpenVINO IR", f"{ir['xml']} + .bin (the ONNX graph it came from, checked above, is not kept)"),
        (
            "IR vs ONNX",
            f"max |Δ| {ir['max_abs']:.2g} ({ir['max_rel']:.3g} of the output scale, <= {ir['atol']:g}) on "
            f"{', '.join(ir['inputs'])}; OpenVINO at f32",
        ),
    ]
    if ir.get("convs"):
        rows.append(("OpenVINO int8", f"{ir['int8_convs']}/{ir['convs']} convolutions run in 8 bits"))
    return rows


def _container(r: dict) -> str:
    if r.get("format") == "openvino":
        return f"OpenVINO IR, converted from ONNX opset {r['opset']}"
    return f"ONNX opset {r['opset']}"


def _precision(r: dict) -> str:
    if r.get("int8"):
        kind = "uint8 activations" if r["int8"]["target"] == "onnxruntime" else "symmetric int8"
        return f"INT8 QDQ for {r['int8']['target']} ({kind}, int8 per-channel weights)"
    return "float16" if r["half"] else "float32"


def _int8_rows(q: dict) -> list[tuple[str, str]]:
    """The QDQ placement and ONNX Runtime's int8 coverage report."""
    cov = q["coverage"]
    total = cov["int8_layers"] + cov["float_layers"]
    rows = [
        (
            "int8 placement",
            f"{len(q['quantized_layers'])} layers with int8 weights{_gemms(q)}, "
            f"{q['quantized_tensors']} activations with Q/DQ",
        ),
        ("kept float", "; ".join(f"{name} ({why})" for name, why in q["float_layers"].items()) or "none"),
        *([("post-processing", _tail(q))] if q.get("float_tail_tensors") else []),
        *([("float outputs", _float_outputs(q))] if q.get("float_output_layers") else []),
        *([("NHWC edges", _nhwc(q["nhwc_rewrites"]))] if q.get("nhwc_rewrites") else []),
        *([("padded stem", _padded(q["padded_stems"]))] if q.get("padded_stems") else []),
        ("ORT coverage", f"{cov['int8_layers']}/{total} Conv/Gemm run as int8 kernels in ONNX Runtime (CPU)"),
        ("ORT int8 ops", _ops(cov["int8_ops"])),
        ("ORT float ops", _ops(cov["float_ops"]) or "none"),
    ]
    if q.get("silu_form"):
        rows += [("SiLU", _silu_row(q)), ("SiLU choice", _silu_choice(q))]
    if cov["float_layer_names"]:
        rows.append(("ORT float layers", ", ".join(cov["float_layer_names"][:8])))
    if q.get("unranged_tensors"):
        rows.append(("no range", f"{len(q['unranged_tensors'])} tensors left float (no calibrated range)"))
    return rows


def _tail(q: dict) -> str:
    return (
        f"float: {q['float_tail_tensors']} tensors after the last quantized layers (the decode; quantizing "
        "it costs accuracy and buys no speed)"
    )


def _float_outputs(q: dict) -> str:
    """optkit.quant.qdq._Graph.float_fed: the layers whose outputs a float layer reads unrounded."""
    names = q["float_output_layers"]
    return (
        f"{', '.join(names[:4])}{' ...' if len(names) > 4 else ''} write float: a float layer reads "
        f"their output unrounded, as in the fake-quant model ({q['float_fed_tensors']} tensors without Q/DQ)"
    )


def _gemms(q: dict) -> str:
    n = len(q.get("gemm_layers") or [])  # 1x1 convs into a float op, as int8 GEMMs with float output
    return f" ({n} 1x1 convs as int8 GEMMs writing float)" if n else ""


def _nhwc(names: list[str]) -> str:
    """optkit.quant.nhwc's rewrites: float convs whose int8 readers get NHWC, pools run in NHWC."""
    return ", ".join(names) + " hand ONNX Runtime NHWC tensors (no Transpose there)"


def _padded(names: list[str]) -> str:
    """optkit.quant.qdq._Graph.pad_stem: int8 stems reading the image with zero channels added."""
    from optkit.quant.qdq import STEM_CHANNELS

    return (
        ", ".join(names)
        + f" read the uint8 image padded to {STEM_CHANNELS} channels (zero weights there; faster in ORT)"
    )


def _silu_row(q: dict) -> str:
    form = {
        "quickgelu": "one float QuickGelu between Q/DQ",
        "qlinear": "QLinearSigmoid + QLinearMul (uint8)",
    }[q["silu_form"]]
    return f"{q['silu_count']} SiLUs as {q['silu_form']}: {form}"


def _silu_choice(q: dict) -> str:
    """Why the form was chosen (optkit.quant.silu_form.choose), with the figures measured for it."""
    measured = []
    if q.get("silu_parity"):
        measured.append("parity " + ", ".join(f"{f} {v:.3g}" for f, v in q["silu_parity"].items()))
    if q.get("silu_timing_ms"):
        measured.append(", ".join(f"{f} {ms:.3f} ms" for f, ms in q["silu_timing_ms"].items()))
    reason = q.get("silu_reason") or "as asked"
    return reason + (f" ({'; '.join(measured)})" if measured else "")


def _ops(counts: dict) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _graph(r: dict) -> str:
    if r["simplified"]:
        return f"onnxslim: {r['nodes_before']} -> {r['nodes_after']} nodes"
    if r["simplify_error"]:
        return f"{r['nodes_after']} nodes, unsimplified: onnxslim failed ({r['simplify_error']})"
    return f"{r['nodes_after']} nodes (not simplified)"


def _has_parts(r: dict) -> bool:
    return any(case.get("parts") for case in r["cases"])


def _case_label(case: dict, images: str) -> str:
    if case["input"] == "nms":
        return f"NMS vs optkit's, {case['shape'][0]} {images}"
    if case["input"] == "val":
        return f"vs PyTorch, {case['shape'][0]} {images}"
    return "vs PyTorch, random " + "x".join(str(d) for d in case["shape"])


def _case_text(case: dict) -> str:
    if case["input"] == "nms":
        n = case["nms"]
        iou = f", least IoU {n['min_iou']:.4f}" if n["matched"] else ""
        return (
            f"{n['graph_detections']} detections, optkit's NMS {n['detections']}, {n['matched']} matched "
            f"(same class, IoU >= 0.99{iou}), max |score Δ| {n['score_max_abs']:.3g}"
        )
    if case.get("parts"):
        return ", ".join(
            f"{name} max |Δ| {p['max_abs']:.3g} ({p['max_rel']:.3g} of {name} scale {p['scale']:.3g})"
            for name, p in case["parts"].items()
        )
    return (
        f"max |Δ| {case['max_abs']:.3g} ({case['max_rel']:.3g} of output scale), "
        f"top-1 agreement {pct(case['top1_agreement'])}"
    )
