"""Structured pruning benchmark, measured in one run (writes results/prune.json, prints a table).

(a) resnet18 at 224 px, `--amount 0.3` (l1, round to 8): GFLOPs reduction (target >= 40%) and eager
    CPU latency pruned/unpruned at batch 1 (target <= 0.75), timed alternately to share the noise.
(b) the demo model (`make demo`'s best.pt; trained here first if missing) on builtin:shapes:
    val top-1 before, after pruning, and after 3 fine-tuning epochs (target: within 1 pp of unpruned).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

from optkit.io import atomic_write_text
from optkit.report.console import err, out

DEMO_BEST = Path("runs/demo/train/weights/best.pt")
DEMO_TRAIN = dict(
    model="yolo-cls-n", data="builtin:shapes", imgsz=64, epochs=12, cos_lr=True, cache=True
)  # = Makefile
MIN_GFLOPS_REDUCTION = 0.40
MAX_LATENCY_RATIO = 0.75
MAX_TOP1_DROP = 0.01  # fraction (1 percentage point)


def resnet_figures(amount: float, rounds: int) -> dict:
    from optkit.measure.flops import count_flops
    from optkit.measure.latency import measure_latency
    from optkit.models import count_params, create_model
    from optkit.stages.prune_structured import StructuredPruneConfig, prune_structured

    model = create_model("resnet18", num_classes=1000).eval()
    pruned, _ = prune_structured(
        model, StructuredPruneConfig(amount=amount, importance="l1", round_to=8, imgsz=224)
    )
    before, after = [], []
    for _ in range(rounds):  # alternate so that both see the same machine state
        before.append(measure_latency(model, 224, warmup=5, runs=20)["median_ms"])
        after.append(measure_latency(pruned, 224, warmup=5, runs=20)["median_ms"])
    g0, g1 = count_flops(model, 224), count_flops(pruned, 224)
    return {
        "gflops_before": g0,
        "gflops_after": g1,
        "gflops_reduction": 1 - g1 / g0,
        "params_before": count_params(model),
        "params_after": count_params(pruned),
        "latency_before_ms": statistics.median(before),
        "latency_after_ms": statistics.median(after),
        "latency_ratio": statistics.median(after) / statistics.median(before),
        "latency_rounds_ms": {"before": before, "after": after},
    }


def demo_figures(amount: float, epochs: int, project: str) -> dict:
    from optkit.workflows.prune import PruneRequest, run_prune

    if not DEMO_BEST.exists():
        from optkit.train.config import TrainConfig
        from optkit.train.trainer import Trainer

        err().print(f"{DEMO_BEST} missing: training the demo model first")
        Trainer(TrainConfig(**DEMO_TRAIN, project="runs/demo", name="train", exist_ok=True)).run()
    request = PruneRequest(
        weights=str(DEMO_BEST),
        amount=amount,
        structured=True,
        data="builtin:shapes",
        finetune_epochs=epochs,
        output=str(Path(project) / "demo-pruned.pt"),
    )
    r = run_prune(request)
    keys = (
        "top1_before",
        "top1_pruned",
        "top1_finetuned",
        "params_before",
        "params_after",
        "gflops_before",
        "gflops_after",
        "achieved",
    )
    return {k: r.get(k) for k in keys} | {"drop_pp": 100 * (r["top1_before"] - r["top1_finetuned"])}


def table(res: dict | None, demo: dict | None) -> None:
    from rich.table import Table

    t = Table(title="optkit prune benchmark (structured, amount 0.3)")
    for col in ("figure", "value", "target", "ok"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    if res:
        t.add_row("resnet18@224 GFLOPs", f"{res['gflops_before']:.3f} -> {res['gflops_after']:.3f}", "", "")
        t.add_row(
            "resnet18@224 GFLOPs reduction",
            f"{res['gflops_reduction']:.1%}",
            ">= 40%",
            _ok(res["gflops_reduction"] >= MIN_GFLOPS_REDUCTION),
        )
        t.add_row(
            "resnet18@224 latency (ms)",
            f"{res['latency_before_ms']:.1f} -> {res['latency_after_ms']:.1f}",
            "",
            "",
        )
        t.add_row(
            "resnet18@224 latency ratio",
            f"{res['latency_ratio']:.2f} x",
            "<= 0.75",
            _ok(res["latency_ratio"] <= MAX_LATENCY_RATIO),
        )
    if demo:
        t.add_row("demo top-1 unpruned", f"{demo['top1_before']:.2%}", "", "")
        t.add_row("demo top-1 pruned", f"{demo['top1_pruned']:.2%}", "", "")
        t.add_row(
            "demo top-1 + fine-tune",
            f"{demo['top1_finetuned']:.2%}",
            "within 1 pp",
            _ok(demo["drop_pp"] <= 100 * MAX_TOP1_DROP),
        )
    out().print(t)


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--amount", type=float, default=0.3)
    p.add_argument("--rounds", type=int, default=3, help="alternating latency rounds")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--out", default="results/prune.json")
    args = p.parse_args()
    import torch

    res = None if args.skip_resnet else resnet_figures(args.amount, args.rounds)
    demo = None if args.skip_demo else demo_figures(args.amount, args.finetune_epochs, "results")
    table(res, demo)
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "amount": args.amount,
        "resnet18": res,
        "demo": demo,
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    err().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
