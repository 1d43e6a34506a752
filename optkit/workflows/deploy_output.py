"""What `optkit deploy` writes: the work folder's record of the search (`candidates.json`,
`candidates.csv`, `pareto.png`) and, when a candidate is within the budget, the chosen file copied to the
output with the search recorded in its metadata as JSON: an ONNX file's `metadata_props["deploy"]`, an
OpenVINO IR's `rt_info["optkit"]["deploy"]`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

META_KEY = "deploy"  # the output's metadata key (ONNX metadata_props, IR rt_info["optkit"])
CSV_COLUMNS = ("key", "label", "status", "fitness", "drop", "within", "latency_ms", "base_latency_ms",
               "speedup", "speedup_q1", "speedup_q3", "bytes", "reused", "seconds", "file",
               "error")  # fmt: skip
SUMMARY_KEYS = ("key", "label", "config", "status", "fitness", "metrics", "drop", "within", "latency_ms",
                "base_latency_ms", "speedup", "bytes", "error")  # fmt: skip


def write_outputs(result: dict, chosen: dict | None, output: Path) -> None:
    """The work folder's files, then (with a chosen candidate) the output file; `result["output"]` and
    `result["plot"]` say where they went."""
    from optkit.io import atomic_write_text
    from optkit.pictures.pareto import plot_pareto

    work = Path(result["work"])
    points = [r for r in result["candidates"] if r["status"] == "ok"]
    if points:
        result["plot"] = str(work / "pareto.png")
        plot_pareto(points, result["chosen"], result["metric"], result["max_drop"], result["plot"])
    if chosen is not None:
        write_chosen(chosen, result, output)
        result["output"] = str(output)
    # last, so that the record names the plot and the output written above
    atomic_write_text(work / "candidates.csv", candidates_csv(result["candidates"]))
    atomic_write_text(work / "candidates.json", json.dumps(result, indent=1, sort_keys=True, default=str))


def candidates_csv(candidates: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in candidates:
        writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    return buffer.getvalue()


def search_record(result: dict, chosen: dict) -> dict:
    """The lineage the output file carries: the budget, the baseline, every candidate tried (summary),
    the choice with its measured accuracy and latency."""
    from optkit import __version__

    def summary(row: dict) -> dict:
        return {k: row.get(k) for k in SUMMARY_KEYS}

    return {
        "stage": "deploy",
        "optkit_version": __version__,
        "source_sha256": result["source_sha256"],
        "data": result["data"],
        "target": result["target"],
        "fitness_key": result["fitness_key"],
        "max_drop": result["max_drop"],
        "imgsz": result["imgsz"],
        "latency_imgsz": result["latency_imgsz"],
        "interrupted": result["interrupted"],
        "baseline": summary(result["baseline"]),
        "chosen": summary(chosen),
        "candidates": [summary(r) for r in result["candidates"][1:]],
    }


def write_chosen(chosen: dict, result: dict, output: Path) -> None:
    """The chosen file (checked by export's parity check when it was made) with the search record added
    to its metadata, written atomically: the graph itself is unchanged."""
    import onnx

    from optkit.io import atomic_path

    record = json.dumps(search_record(result, chosen), sort_keys=True)
    if Path(chosen["file"]).is_dir():  # an OpenVINO IR folder: saved again under the output's name
        from optkit.ovrt import read_ir, save_ir

        save_ir(read_ir(chosen["file"])[0], output, {META_KEY: record})
        return
    proto = onnx.load(chosen["file"])
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, record
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
