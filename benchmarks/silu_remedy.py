"""INT8 speed-up on ONNX Runtime CPU by activation, and the SiLU remedy (writes results/silu_remedy.json).

For each model (random-init unless noted; builtin:shapes, 8 classes, 224 px, batch 1):
1. a float checkpoint, `ptq-calibrate` on N train images (percentile by default), the fp32 ONNX and
   optkit's onnxruntime INT8 ONNX (what `optkit export` writes: its automatic choices);
2. variants of the INT8 graph with the choices forced (optkit.quant.qdq.build_qdq's `silu_unit`,
   `float_stem`): "plain" (neither), "silu" (SiLU as one QuickGelu only), "stem" (float stem only);
3. the peer: onnxruntime.quantization.quantize_static (QDQ, per-channel, uint8 activations, int8
   weights) on the same fp32 ONNX, calibrated on the same images;
4. ONNX Runtime latency of all of them at 1 and 2 intra-op threads: rounds alternate the files so all see
   the same machine state; per round the median of `--runs` runs; reported: median over rounds, and the
   speed-up as the median of the per-round ratios fp32/int8 (paired, robust to load drifting);
5. with `--trained` (the demo model, yolo-cls-n SiLU trained at 64 px): val top-1 of fp32, optkit int8,
   peer at 64 px, and the same weights at 224 px for timing with trained activation ranges.

    .venv/bin/python benchmarks/silu_remedy.py [--rounds 10 --runs 20 --num-images 64 --trained]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from ort_timing import alternating_timings

from optkit.io import atomic_write_text
from optkit.report.console import err, out

DATA = "builtin:shapes"
DEMO_BEST = Path("runs/demo/train/weights/best.pt")
# (label, model, options, imgsz); the activations optkit models can be built with
MODELS = [
    ("yolo-cls-s silu", "yolo-cls-s", {}, 224),
    ("yolo-cls-n silu", "yolo-cls-n", {}, 224),
    ("resnet18 relu", "resnet18", {"act": "relu"}, 224),
    ("mobilenet-v2 relu6", "mobilenet-v2", {}, 224),
    ("yolo-cls-s hardswish", "yolo-cls-s", {"act": "hardswish"}, 224),
]
VARIANTS = {"plain": (False, False), "silu": (True, False), "stem": (False, True)}  # silu_unit, float_stem
TARGET_SPEEDUP = {"silu": 1.8, "relu": 2.5}  # issue targets, yolo-cls-s / resnet18 at 224 px
MAX_SIZE_RATIO = 0.30  # INT8 file / fp32 file


def float_checkpoint(folder: Path, label: str, model: str, options: dict, imgsz: int) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data import resolve_data
    from optkit.models import create_model
    from optkit.models.weight_init import randomize_bn

    names = resolve_data(DATA).names
    m = randomize_bn(create_model(model, num_classes=len(names), **options), bias=True)
    return save_checkpoint(checkpoint_from_model(m, names, imgsz), folder / f"{_slug(label)}.pt")


def trained_at(folder: Path, imgsz: int) -> Path:
    """The demo model's weights in a checkpoint for `imgsz` (trained activations, any input size)."""
    from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(DEMO_BEST)
    return save_checkpoint(
        checkpoint_from_model(build_model(ckpt), ckpt.names, imgsz), folder / f"demo-{imgsz}.pt"
    )


def artifacts(folder: Path, pt: Path, args) -> dict:
    """{name: .onnx path} for fp32, optkit int8 (automatic), the forced variants and the peer; and the
    export report of optkit's int8."""
    from optkit.checkpoint import load_checkpoint
    from optkit.quant.config import QuantConfig
    from optkit.stages.export import ExportConfig, export_checkpoint
    from optkit.workflows.ptq import PtqRequest, run_ptq

    stem = folder / pt.stem
    int8_pt = Path(f"{stem}-int8.pt")
    ptq = run_ptq(
        PtqRequest(
            str(pt),
            DATA,
            num_images=args.num_images,
            quant=QuantConfig(method=args.method),
            output=str(int8_pt),
        )
    )
    files = {"fp32": Path(f"{stem}-fp32.onnx"), "optkit": Path(f"{stem}-int8.onnx")}
    export_checkpoint(load_checkpoint(pt), files["fp32"], ExportConfig())
    # random-init SiLU nets have tiny logits: parity is judged relative to them (hence the loose atol)
    report = export_checkpoint(
        load_checkpoint(int8_pt), files["optkit"], ExportConfig(int8_target="onnxruntime", atol=args.atol)
    )
    for name, (silu_unit, float_stem) in VARIANTS.items():
        files[name] = Path(f"{stem}-int8-{name}.onnx")
        export_variant(int8_pt, files[name], silu_unit, float_stem, args.atol)
    files["peer"] = Path(f"{stem}-peer.onnx")
    peer_quantize(files["fp32"], files["peer"], load_checkpoint(pt), args.num_images)
    ptq_figures = {k: ptq[k] for k in ("float_top1", "int8_top1", "top1_agreement", "sqnr_db")}
    return {"files": files, "int8_report": report.int8, "ptq": ptq_figures}


def export_variant(int8_pt: Path, output: Path, silu_unit: bool, float_stem: bool, atol: float) -> None:
    """optkit's onnxruntime INT8 export with the graph choices forced (the export's own checks run)."""
    from dataclasses import replace

    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.quant.onnx_export import int8_plan
    from optkit.quant.qdq import build_qdq
    from optkit.quant.quantizers import quantize_entry
    from optkit.stages.export import ExportConfig, export_onnx, optkit_metadata

    ckpt = load_checkpoint(int8_pt)
    model = build_model(ckpt)
    plan = int8_plan(model, quantize_entry(ckpt.transforms), "onnxruntime")

    def rewrite(proto):
        return build_qdq(
            proto, plan.layers, plan.ranges, "onnxruntime", silu_unit=silu_unit, float_stem=float_stem
        )[0]

    config = replace(ExportConfig(int8_target="onnxruntime", atol=atol), imgsz=ckpt.imgsz)
    metadata = optkit_metadata(ckpt, ckpt.imgsz, 32, None)
    export_onnx(plan.float_model, output, config, metadata, None, rewrite=rewrite, reference=model)


def calibration_batches(ckpt, num_images: int) -> list:
    """The images ptq-calibrate calibrates on (the same selection and preprocessing)."""
    from optkit.data import resolve_data
    from optkit.data.subset import split_batches
    from optkit.stages.export import preprocess_of

    spec = resolve_data(DATA)
    return split_batches(spec.train_dir, ckpt.names, ckpt.imgsz, preprocess_of(ckpt), num_images, 32)


def peer_quantize(fp32: Path, output: Path, ckpt, num_images: int) -> None:
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, batches, name):
            self.items = iter(
                [{name: x[i : i + 1].numpy().astype(np.float32)} for x in batches for i in range(len(x))]
            )

        def get_next(self):
            return next(self.items, None)

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    quantize_static(
        str(fp32),
        str(output),
        Reader(calibration_batches(ckpt, num_images), name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    _copy_metadata(fp32, output)


def _copy_metadata(src: Path, dst: Path) -> None:
    """optkit's metadata (names, imgsz, preprocess) so `optkit val` can run the peer's file."""
    import onnx

    model = onnx.load(str(dst))
    if not model.metadata_props:
        for p in onnx.load(str(src)).metadata_props:
            model.metadata_props.add(key=p.key, value=p.value)
        onnx.save(model, str(dst))


def summarize(per_round: dict) -> dict:
    base = per_round["fp32"]
    return {
        name: {
            "median_ms": statistics.median(v),
            "min_ms": min(v),
            "speedup": statistics.median(a / b for a, b in zip(base, v, strict=True)),  # paired rounds
        }
        for name, v in per_round.items()
    }


def accuracy(files: dict) -> dict:
    from optkit.workflows.val import ValRequest, run_val

    return {name: run_val(ValRequest(str(path), DATA))["top1"] for name, path in files.items()}


def measure(folder: Path, label: str, pt: Path, imgsz: int, args, with_accuracy: bool = False) -> dict:
    made = artifacts(folder, pt, args)
    files = made["files"]
    if "silu" not in label:
        files.pop("silu")  # no SiLU to rewrite: the same graph as "plain"
    row = {
        "label": label,
        "imgsz": imgsz,
        "ptq": made["ptq"],
        "int8_report": {
            k: made["int8_report"][k] for k in ("float_layers", "silu_form", "silu_timing_ms", "coverage")
        },
        "bytes": {name: p.stat().st_size for name, p in files.items()},
        "threads": {},
    }
    for threads in args.threads:
        per_round = alternating_timings(files, imgsz, threads, args.rounds, args.runs, warmup=5)
        row["threads"][str(threads)] = {"rounds_ms": per_round, "summary": summarize(per_round)}
        s = row["threads"][str(threads)]["summary"]
        err().print(
            f"{label} @{imgsz}, {threads} thread(s), load {os.getloadavg()[0]:.1f}: "
            + ", ".join(f"{k} {v['median_ms']:.2f} ms x{v['speedup']:.2f}" for k, v in s.items())
        )
    if with_accuracy:
        row["top1"] = accuracy(files)
        err().print(f"{label} @{imgsz} top-1: {row['top1']}")
    return row


def table(rows: list[dict], threads: list[int]) -> None:
    from rich.table import Table

    t = Table(
        title="INT8 on ONNX Runtime CPU, batch 1 (median ms over alternating rounds; x = paired speed-up)"
    )
    for col in (
        "model",
        "imgsz",
        "thr",
        "fp32 ms",
        "optkit ms",
        "x",
        "plain x",
        "silu x",
        "stem x",
        "peer ms",
        "peer x",
        "size",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        for th in threads:
            s = r["threads"][str(th)]["summary"]
            t.add_row(
                r["label"],
                str(r["imgsz"]),
                str(th),
                f"{s['fp32']['median_ms']:.2f}",
                f"{s['optkit']['median_ms']:.2f}",
                f"{s['optkit']['speedup']:.2f}",
                f"{s['plain']['speedup']:.2f}",
                f"{s['silu']['speedup']:.2f}" if "silu" in s else "-",
                f"{s['stem']['speedup']:.2f}",
                f"{s['peer']['median_ms']:.2f}",
                f"{s['peer']['speedup']:.2f}",
                f"{r['bytes']['optkit'] / r['bytes']['fp32']:.0%}",
            )
    out().print(t)
    for r in rows:
        if "top1" in r:
            out().print(
                f"{r['label']} @{r['imgsz']} val top-1: "
                + ", ".join(f"{k} {v:.4f}" for k, v in r["top1"].items())
            )
        out().print(f"{r['label']}: float layers {r['int8_report']['float_layers'] or 'none'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--method", default="percentile")
    p.add_argument(
        "--atol", type=float, default=10.0, help="export parity tolerance (random-init logits are tiny)"
    )
    p.add_argument("--models", nargs="*", default=None, help="labels from MODELS (default: all)")
    p.add_argument("--trained", action="store_true", help="also the demo model (trained yolo-cls-n SiLU)")
    p.add_argument("--out", default="results/silu_remedy.json")
    args = p.parse_args()
    import onnxruntime
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="optkit-bench-silu-") as tmp:
        folder = Path(tmp)
        for label, model, options, imgsz in MODELS:
            if args.models is None or label in args.models:
                pt = float_checkpoint(folder, label, model, options, imgsz)
                rows.append(measure(folder, label, pt, imgsz, args))
        if args.trained:
            demo = "demo yolo-cls-n silu (trained)"
            rows.append(measure(folder, demo, trained_at(folder, 64), 64, args, with_accuracy=True))
            rows.append(measure(folder, demo, trained_at(folder, 224), 224, args))
    table(rows, args.threads)
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "args": vars(args),
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(record, indent=2, default=str) + "\n")
    err().print(f"wrote {args.out}")
    return 0


def _slug(label: str) -> str:
    return label.replace(" ", "-").replace("(", "").replace(")", "")


if __name__ == "__main__":
    sys.exit(main())
