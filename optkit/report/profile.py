"""What `optkit profile` prints, and the schema of `optkit profile --json`.

`--json` prints one object with exactly these top-level keys (null where a figure is unavailable or
does not apply; never 0 in place of an unknown). Times in milliseconds, memory in bytes, FLOPs in GFLOPs
(2 x multiply-accumulates / 1e9) for one forward pass of the whole batch:

    optkit_version   str
    source           str      the .pt / .onnx path, or the zoo model name, that was profiled
    source_kind      str      "checkpoint" | "onnx" | "openvino" | "zoo"
    source_format    str|null what a .pt file is, when not an optkit checkpoint (foreign, state_dict, ...)
    source_reason    str      why this source: "named on the command line ...", or how it was found
    arch             str|null registry name (checkpoint, zoo; ONNX: its `arch` metadata)
    backend          str      "pytorch" | "onnxruntime"
    device           str      "cpu", "cuda:0"; ONNX: "cpu (CPUExecutionProvider)", ...
    threads          int|null intra-op threads used on CPU (null: CUDA, or ONNX Runtime's default)
    num_classes      int|null
    imgsz            int      pixels (square input side)
    batch_size       int      images per pass for counts, latency, memory and per-layer time
    input_shape      [int]    N, C, H, W
    bn_folded        int|null BatchNorm layers folded into the conv/linear before them for counting and
                              timing (ONNX: BatchNormalization nodes counted as folded); null: fusing failed
    params           int|null parameter elements of the inference form (BatchNorm folded)
    params_unfused   int|null the PyTorch model's own count (as `optkit info`); null for ONNX
    gflops           float|null  ultralytics-thop (PyTorch) or the ONNX graph count, same rules
    gflops_counter   str      "ultralytics-thop" | "onnx-graph" | "openvino-ir"
    gflops_check     float|null  torch FlopCounterMode on the same model and input; null for ONNX
    gflops_unfused   float|null  thop on the model as built (BatchNorm counted); null for ONNX
    flops_note       str|null set when thop and FlopCounterMode differ by more than 2% or one failed
    latency          {warmup, runs, median_ms, p90_ms, min_ms, mean_ms, img_per_s, gflops_per_s}
                     per forward pass of the batch; img_per_s = batch / median; gflops_per_s = achieved
                     GFLOP/s = gflops / median seconds (null when gflops is)
    backward         null | {warmup, runs, median_ms, p90_ms, min_ms, mean_ms, img_per_s}
                     forward + backward of sum(output), eval mode (--backward, PyTorch only)
    memory           {method: str, cuda_peak_allocated_bytes: int|null, rss_peak_growth_bytes: int|null,
                      activation_bytes: int|null}
                     CUDA: torch.cuda.max_memory_allocated over warm-up + timed runs; CPU: peak RSS growth
                     over them (sampled every ~1 ms, a lower bound); activations: bytes of the new tensors
                     leaf modules output in one pass (PyTorch only)
    per_layer        null | {total_ms, layers, top, rows: [{name, type, ms, share, calls, gflops}],
                             others_ms, others_share, outside_ms, outside_share}
                     mean ms per pass with timing hooks (PyTorch) / ONNX Runtime's profiler on; shares
                     are fractions of total_ms; rows (the `top` slowest) + others (the remaining layers)
                     + outside (time in no layer: functional ops, framework and hook overhead) sum to 1
    sweep            null | [{batch_size, median_ms, p90_ms, img_per_s, gflops_per_s,
                              cuda_peak_allocated_bytes, rss_peak_growth_bytes, activation_bytes}]
    autobatch        int|null    batch that fills --fraction of free CUDA memory (--autobatch, CUDA)
    autobatch_note   str|null    how it was chosen, or why there is none
    notes            [str]
"""

from __future__ import annotations

from optkit.report.console import kv_table, out, pct

JSON_KEYS = (
    "optkit_version",
    "source",
    "source_kind",
    "source_format",
    "source_reason",
    "arch",
    "backend",
    "device",
    "threads",
    "num_classes",
    "imgsz",
    "batch_size",
    "input_shape",
    "bn_folded",
    "params",
    "params_unfused",
    "gflops",
    "gflops_counter",
    "gflops_check",
    "gflops_unfused",
    "flops_note",
    "latency",
    "backward",
    "memory",
    "per_layer",
    "sweep",
    "autobatch",
    "autobatch_note",
    "notes",
)


def print_profile(r: dict) -> None:
    out().print(kv_table(f"optkit profile  {r['source']}", _summary_rows(r)))
    if r["per_layer"]:
        out().print(_layer_table(r["per_layer"], r["backend"]))
    if r["sweep"]:
        out().print(_sweep_table(r["sweep"]))


def _summary_rows(r: dict) -> list[tuple[str, str]]:
    kinds = {
        "checkpoint": "optkit checkpoint",
        "onnx": "ONNX model",
        "openvino": "OpenVINO IR",
        "zoo": "zoo model",
    }
    kind = kinds[r["source_kind"]]
    kind = r.get("source_format") or kind
    rows = [("profiled", f"{r['source']}  ({kind}; {r['source_reason']})")]
    model = r["arch"] or "architecture not recorded"
    if r["num_classes"] is not None:
        model += f", {r['num_classes']} classes"
    rows.append(("model", model))
    n = r["threads"]
    threads = f", {n} thread{'s' if n != 1 else ''}" if n is not None else ""
    rows.append(("backend", f"{r['backend']} on {r['device']}{threads}"))
    rows.append(
        ("input", " x ".join(map(str, r["input_shape"])) + f"  (imgsz {r['imgsz']}, batch {r['batch_size']})")
    )
    rows.append(("params", _params(r)))
    rows.append(("GFLOPs", _flops(r)))
    lat = r["latency"]
    rows.append(("latency", _timing(lat)))
    achieved = f", {lat['gflops_per_s']:.1f} GFLOP/s achieved" if lat["gflops_per_s"] is not None else ""
    rows.append(("throughput", f"{_num(lat['img_per_s'], '.1f')} img/s{achieved}"))
    if r["backward"]:
        b = r["backward"]
        rows.append(("fwd + bwd", f"{_timing(b)}; {_num(b['img_per_s'], '.1f')} img/s"))
    rows.append(("memory", _memory(r["memory"])))
    rows.append(("", r["memory"]["method"]))
    if r["autobatch"] is not None or r["autobatch_note"]:
        rows.append(
            (
                "autobatch",
                (f"{r['autobatch']}: " if r["autobatch"] is not None else "") + (r["autobatch_note"] or ""),
            )
        )
    for note in r["notes"]:
        rows.append(("note", note))
    return rows


def _params(r: dict) -> str:
    if r["params"] is None:
        return "n/a"
    text = f"{r['params']:,}"
    if r["bn_folded"]:
        text += f"  (BatchNorm folded into {r['bn_folded']} layers"
        text += f"; {r['params_unfused']:,} as built)" if r["params_unfused"] is not None else ")"
    return text


def _flops(r: dict) -> str:
    g = r["gflops"]
    if g is None:
        return "unavailable" + (f" ({r['flops_note']})" if r["flops_note"] else "")
    text = f"{g:.4g} per pass ({r['gflops_counter']})"
    if r["batch_size"] > 1:
        text += f", {g / r['batch_size']:.4g} per image"
    if r["flops_note"]:
        text += f"; {r['flops_note']}"
    elif r["gflops_check"] is not None:
        text += "; FlopCounterMode agrees within 2%"
    if r["gflops_unfused"] is not None and r["bn_folded"]:
        text += f"; {r['gflops_unfused']:.4g} as built"
    return text


def _timing(t: dict) -> str:
    return (
        f"median {t['median_ms']:.3f} ms, p90 {t['p90_ms']:.3f}, min {t['min_ms']:.3f}"
        f"  ({t['warmup']} warm-up + {t['runs']} timed runs)"
    )


def _memory(m: dict) -> str:
    parts = []
    if m["cuda_peak_allocated_bytes"] is not None:
        parts.append(f"CUDA peak allocated {_mib(m['cuda_peak_allocated_bytes'])}")
    if m["rss_peak_growth_bytes"] is not None:
        parts.append(f"RSS peak growth {_mib(m['rss_peak_growth_bytes'])}")
    if m["activation_bytes"] is not None:
        parts.append(f"activations {_mib(m['activation_bytes'])} (leaf-module outputs, one pass)")
    return ", ".join(parts) or "n/a"


def _layer_table(p: dict, backend: str):
    from rich.table import Table

    unit = "node" if backend == "onnxruntime" else "layer"
    table = Table(
        title=f"per {unit}: {p['top']} slowest of {p['layers']} (mean of one pass: {p['total_ms']:.3f} ms)"
    )
    for col in (unit, "type", "ms", "share", "GFLOPs", "calls"):
        table.add_column(col, justify="left" if col in (unit, "type") else "right")
    for row in p["rows"]:
        table.add_row(
            row["name"],
            row["type"],
            f"{row['ms']:.3f}",
            pct(row["share"], 1),
            _num(row["gflops"], ".4g"),
            f"{row['calls']:g}",
        )
    rest = p["layers"] - len(p["rows"])
    if rest > 0:
        table.add_row(
            f"({rest} other {unit}s)", "", f"{p['others_ms']:.3f}", pct(p["others_share"], 1), "", ""
        )
    table.add_row(f"(outside any {unit})", "", f"{p['outside_ms']:.3f}", pct(p["outside_share"], 1), "", "")
    return table


def _sweep_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="batch-size sweep")
    columns = ("batch", "median ms", "p90 ms", "img/s", "GFLOP/s", "memory", "activations")
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        peak = row["cuda_peak_allocated_bytes"]
        memory = f"{_mib(peak)} CUDA" if peak is not None else None
        if memory is None and row["rss_peak_growth_bytes"] is not None:
            memory = f"+{_mib(row['rss_peak_growth_bytes'])} RSS"
        table.add_row(
            str(row["batch_size"]),
            f"{row['median_ms']:.3f}",
            f"{row['p90_ms']:.3f}",
            _num(row["img_per_s"], ".1f"),
            _num(row["gflops_per_s"], ".1f"),
            memory or "n/a",
            _mib(row["activation_bytes"]) if row["activation_bytes"] is not None else "n/a",
        )
    return table


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / (1 << 20):.1f} MiB"  # bytes to MiB (2^20)
