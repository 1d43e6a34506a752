"""Latency measurement overhead and backends, measured in one run (writes results/profile.json).

For the demo model (yolo-cls-n on builtin:shapes, 64 px) and resnet18 (224 px), batch 1:
- `optkit profile`'s ONNX Runtime median vs a bare `InferenceSession.run` loop on the same file and input
  (target: within 10%), and its PyTorch eager median vs a bare `model(x)` loop on the same model (the
  BatchNorm-folded form `optkit profile` runs; target: within 10%);
- ONNX Runtime fp32 vs PyTorch eager latency (reported).
Rounds alternate optkit and bare so both see the same machine state; medians of the rounds are reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from optkit.io import atomic_write_text
from optkit.report.console import err, out

DEMO_BEST = Path("runs/demo/train/weights/best.pt")
DEMO_TRAIN = dict(
    model="yolo-cls-n", data="builtin:shapes", imgsz=64, epochs=12, cos_lr=True, cache=True
)  # = Makefile
MAX_OVERHEAD = 0.10  # |optkit / bare - 1|


def artifacts(folder: Path) -> list[tuple[str, Path, Path, int]]:
    """(label, .pt, .onnx, imgsz) for the demo model and resnet18."""
    from optkit.checkpoint import checkpoint_from_model, load_checkpoint, save_checkpoint
    from optkit.models import create_model
    from optkit.stages.export import ExportConfig, export_checkpoint

    if not DEMO_BEST.exists():
        from optkit.train.config import TrainConfig
        from optkit.train.trainer import Trainer

        err().print(f"{DEMO_BEST} missing: training the demo model first")
        Trainer(TrainConfig(**DEMO_TRAIN, project="runs/demo", name="train", exist_ok=True)).run()
    resnet = create_model("resnet18", num_classes=1000).eval()
    resnet_pt = save_checkpoint(
        checkpoint_from_model(resnet, [str(i) for i in range(1000)], 224), folder / "r18.pt"
    )
    items = []
    for label, pt in (("demo yolo-cls-n@64", DEMO_BEST), ("resnet18@224", resnet_pt)):
        onnx_path = folder / f"{pt.stem}-{len(items)}.onnx"
        ckpt = load_checkpoint(pt)
        export_checkpoint(ckpt, onnx_path, ExportConfig(), source=pt)
        items.append((label, pt, onnx_path, ckpt.imgsz))
    return items


def optkit_median(path: Path, imgsz: int, warmup: int, runs: int) -> float:
    from optkit.workflows.profile import ProfileRequest, run_profile

    request = ProfileRequest(source=str(path), imgsz=imgsz, warmup=warmup, runs=runs)
    return run_profile(request)["latency"]["median_ms"]


def bare_ort_median(path: Path, imgsz: int, warmup: int, runs: int) -> float:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {
        session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
            (1, 3, imgsz, imgsz), np.float32
        )
    }
    return _median_ms(lambda: session.run(None, feed), warmup, runs)


def bare_torch_median(path: Path, imgsz: int, warmup: int, runs: int) -> float:
    import torch

    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.stages.fuse import FuseConfig, fuse

    model = fuse(build_model(load_checkpoint(path)), FuseConfig(check=False))[0].eval()
    x = torch.randn(1, 3, imgsz, imgsz)
    with torch.inference_mode():
        return _median_ms(lambda: model(x), warmup, runs)


def _median_ms(step, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)  # s to ms
    return statistics.median(times)


def measure(label: str, pt: Path, onnx_path: Path, imgsz: int, rounds: int, warmup: int, runs: int) -> dict:
    fig = {"ort_optkit": [], "ort_bare": [], "torch_optkit": [], "torch_bare": []}
    for r in range(rounds):
        fig["ort_optkit"].append(optkit_median(onnx_path, imgsz, warmup, runs))
        fig["ort_bare"].append(bare_ort_median(onnx_path, imgsz, warmup, runs))
        fig["torch_optkit"].append(optkit_median(pt, imgsz, warmup, runs))
        fig["torch_bare"].append(bare_torch_median(pt, imgsz, warmup, runs))
        err().print(
            f"{label} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.3f} ms" for k, v in fig.items())
        )
    med = {k: statistics.median(v) for k, v in fig.items()}
    return {
        "label": label,
        "imgsz": imgsz,
        "rounds_ms": fig,
        "median_ms": med,
        "ort_overhead": med["ort_optkit"] / med["ort_bare"],
        "torch_overhead": med["torch_optkit"] / med["torch_bare"],
        "ort_speedup_vs_torch": med["torch_bare"] / med["ort_bare"],
    }


def table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="optkit profile benchmark (batch 1, CPU, median ms)")
    for col in (
        "model",
        "ORT optkit",
        "ORT bare",
        "ratio",
        "torch optkit",
        "torch bare",
        "ratio",
        "ORT vs torch",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        m = r["median_ms"]
        t.add_row(
            r["label"],
            f"{m['ort_optkit']:.3f}",
            f"{m['ort_bare']:.3f}",
            _ratio(r["ort_overhead"]),
            f"{m['torch_optkit']:.3f}",
            f"{m['torch_bare']:.3f}",
            _ratio(r["torch_overhead"]),
            f"{r['ort_speedup_vs_torch']:.2f}x faster",
        )
    out().print(t)
    out().print(f"target: optkit within {MAX_OVERHEAD:.0%} of the bare loop (ratio 0.90-1.10)")


def _ratio(x: float) -> str:
    ok = abs(x - 1) <= MAX_OVERHEAD
    return f"{x:.3f} {'yes' if ok else 'NO'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--out", default="results/profile.json")
    args = p.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="optkit-bench-profile-") as tmp:
        rows = [measure(*item, args.rounds, args.warmup, args.runs) for item in artifacts(Path(tmp))]
    table(rows)
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    err().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
