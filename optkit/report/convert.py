"""What `optkit convert` prints: where the weights came from, the optkit model they now fill, and the
measured agreement of the two models' outputs."""

from __future__ import annotations

from optkit.report.console import kv_table, mb, out

SHOWN_NAMES = 6  # class names listed before "..."


def print_convert(r: dict) -> None:
    out().print(kv_table(f"optkit convert  {r['source']}", convert_rows(r)))


def convert_rows(r: dict) -> list[tuple[str, str]]:
    check = r["check"]
    names = r["names"]
    shown = ", ".join(names[:SHOWN_NAMES]) + (", ..." if len(names) > SHOWN_NAMES else "")
    return [
        ("output", r["output"]),
        ("loads", "with weights_only=True: no --trust needed"),
        ("from", f"{r['from']}, {r['weights']} weights"),
        ("model", _model(r)),
        ("classes", f"{len(names)} ({shown})"),
        ("imgsz", f"{r['imgsz']} px, stride {r['stride']}"),
        (
            "max |Δ|",
            f"{check['max_abs']:.3g} abs, {check['max_rel']:.3g} of the output scale ({check['scale']:.4g}); "
            f"scores {check['max_abs_scores']:.3g} ({check['images']} random {check['imgsz']} px images)",
        ),
        ("dropped", ", ".join(r["dropped"]) or "nothing (no training state)"),
        ("size", f"{mb(r['bytes_before'])} -> {mb(r['bytes_after'])} (float32)"),
    ]


def _model(r: dict) -> str:
    scale = f"YOLOv8{r['scale']} scale" if r["scale"] else "a scale of its own"
    options = ", ".join(f"{k}={v}" for k, v in r["options"].items())
    return f"{r['arch']}" + (f" ({options})" if options else "") + f": {scale}, act {r['act']}"
