"""Training benchmarks: the trainer's overhead over a bare PyTorch loop, and `make demo`'s training run.

(a) overhead: images/s of a real `Trainer.run()` (1 epoch; its `images_per_s` counts the training part
    only, not validation or checkpoint saving) against a bare loop (forward, loss, zero_grad, backward,
    step; nothing else) with the same model, optimizer, DataLoader and batches. Runs alternate
    bare, trainer, bare, trainer, ... and the medians are compared. Target: trainer / bare >= 0.85.
(b) demo: `make demo`'s training configuration through the Trainer API into a temp folder.
    Targets: best val top-1 >= 95 %, wall time <= 180 s. Dataset generation is timed separately.
(c) contention (--contention): images/s of `optkit train` (1 epoch of CONTENTION's configuration, each
    run a fresh process) with the machine idle and with one single-threaded busy process beside it, for
    optkit's default CPU threading and the alternatives it was chosen over (optkit.threads). Rounds
    interleave every variant, idle and busy. Targets for the default: busy >= 0.5x its idle figure, and
    idle >= 0.9x the idle figure of torch's own default (libgomp spinning 300,000 times before it sleeps).

Usage: python benchmarks/train.py [--skip-demo] [--skip-overhead] [--rounds 2] [--fraction 0.5] [--contention]
Writes results/train.json (atomically).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from optkit.report.console import err, out
from optkit.train.config import TrainConfig

DATA = "builtin:shapes"
# Overhead comparison: yolo-cls-n on 8 classes at 64 px, batch 64, the trainer's default optimizer.
OVERHEAD = dict(model="yolo-cls-n", data=DATA, imgsz=64, batch_size=64, epochs=1, seed=0)
# Must match the Makefile's `demo` target (`optkit train ...`); update both together.
DEMO = dict(model="yolo-cls-n", data=DATA, imgsz=64, epochs=12, cos_lr=True, cache=True)

WARMUP_FRACTION = 0.02  # of the train split: 160 of 8000 images, 3 batches
MIN_RATIO = 0.85  # trainer images/s over bare-loop images/s
MIN_TOP1 = 0.95  # demo best val top-1, fraction
MAX_DEMO_SECONDS = 180.0  # demo wall time, s
# (c): one epoch on a quarter of the train split (2,000 images), the demo's model and size
CONTENTION = ["--model", "yolo-cls-n", "--data", DATA, "--imgsz", "64", "--epochs", "1", "--fraction", "0.25"]
MIN_BUSY_RATIO = 0.5  # default threading: busy images/s over its idle images/s
MIN_IDLE_RATIO = 0.9  # default threading idle over torch's own default idle


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-demo", action="store_true", help="skip (b), the demo training run")
    p.add_argument("--skip-overhead", action="store_true", help="skip (a), the trainer-vs-bare comparison")
    p.add_argument("--rounds", type=int, default=2, help="(a): bare+trainer pairs, alternating")
    p.add_argument("--fraction", type=float, default=0.5, help="(a): fraction of the train split per run")
    p.add_argument("--workers", type=int, default=None, help="(a): loader workers (default: optkit's)")
    p.add_argument("--cache", action="store_true", help="(a): keep decoded training images in RAM")
    p.add_argument("--contention", action="store_true", help="run (c): idle vs one busy core, per threading")
    p.add_argument("--contention-rounds", type=int, default=3, help="(c): rounds over every variant")
    p.add_argument("--out", default="results/train.json", help="JSON file to write")
    # smoke-test knobs: anything but the defaults is not `make demo` (the table says so)
    p.add_argument("--demo-epochs", type=int, default=DEMO["epochs"], help=argparse.SUPPRESS)
    p.add_argument("--demo-fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 1 or not 0 < args.fraction <= 1 or not 0 < args.demo_fraction <= 1:
        p.error("--rounds must be >= 1; --fraction and --demo-fraction in (0, 1]")
    return args


# ---------------------------------------------------------------------------------------------- data


def prepare_data(spec: str) -> float | None:
    """Resolve `spec` before any clock starts; seconds spent generating it, None when it was cached."""
    from optkit.data import builtin_root, resolve_data

    generated: list[str] = []

    def log(message: str) -> None:
        generated.append(message)
        err().print(message)

    t0 = time.perf_counter()
    if spec.startswith("builtin:"):
        builtin_root(spec.split(":", 1)[1], log=log)
    resolve_data(spec)
    return time.perf_counter() - t0 if generated else None


# ------------------------------------------------------------------------------------------ overhead


def overhead_config(fraction: float, workers: int, cache: bool, project: str) -> TrainConfig:
    from optkit.tasks import get_task

    cfg = TrainConfig(
        **OVERHEAD,
        fraction=fraction,
        workers=workers,
        cache=cache,
        project=project,
        name="overhead",
        exist_ok=True,
    )
    return cfg.with_task_lr0(get_task("classify"))  # the bare loop builds its optimizer from it


def bare_images_per_s(cfg: TrainConfig) -> float:
    """One epoch of the plainest loop over the trainer's DataLoader and optimizer; images/s."""
    import torch

    from optkit.data import ImageFolder, TrainTransform, build_train_loader, resolve_data
    from optkit.device import select_device
    from optkit.models import create_model
    from optkit.train.memory_format import training_memory_format
    from optkit.train.optim import build_optimizer

    device = select_device(cfg.device)
    layout = training_memory_format(device)  # the trainer's (channels-last on the CPU)
    data = resolve_data(cfg.data)
    torch.manual_seed(cfg.seed)  # the same initial weights as the trainer's
    model = create_model(cfg.model, num_classes=len(data.names), **cfg.model_options).train()
    model.to(device, memory_format=layout)
    dataset = ImageFolder(data.train_dir, TrainTransform(cfg.imgsz), classes=data.names, cache=cfg.cache)
    loader, sampler = build_train_loader(
        dataset, cfg.batch_size, cfg.workers, cfg.seed, fraction=cfg.fraction
    )
    optimizer = build_optimizer(model, cfg, cfg.batch_size)
    criterion = torch.nn.CrossEntropyLoss()
    torch.manual_seed(cfg.seed)  # dropout masks, as the trainer seeds epoch 0
    sampler.set_epoch(0)
    seen = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, memory_format=layout), y.to(device)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += y.numel()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - t0)


def trainer_images_per_s(cfg: TrainConfig) -> float:
    """A real 1-epoch Trainer.run(); its images/s excludes set-up, validation and checkpoint saving."""
    from optkit.train.trainer import Trainer

    return Trainer(cfg).run().images_per_s


def warm_up(cfg: TrainConfig) -> None:
    """Untimed: one-time costs (imports, kernel set-up, first reads of the image files) land in no
    measured run, else the first one (bare) pays them."""
    from optkit.data import resolve_data

    for path in sorted(resolve_data(cfg.data).train_dir.rglob("*")):
        if path.is_file():
            path.read_bytes()  # into the OS page cache, for every run alike
    tiny = replace(cfg, fraction=WARMUP_FRACTION)
    bare_images_per_s(tiny)
    trainer_images_per_s(tiny)


def run_overhead(args: argparse.Namespace, project: str) -> dict:
    from optkit.data import default_workers

    workers = args.workers if args.workers is not None else default_workers()
    cfg = overhead_config(args.fraction, workers, args.cache, project).validate()
    err().print("warm-up (untimed) ...")
    warm_up(cfg)
    bare, trainer = [], []  # images/s per run
    for r in range(args.rounds):
        bare.append(bare_images_per_s(cfg))
        trainer.append(trainer_images_per_s(cfg))
        err().print(
            f"round {r + 1}/{args.rounds}: bare {bare[-1]:,.0f} img/s, trainer {trainer[-1]:,.0f} img/s"
        )
    bare_med, trainer_med = statistics.median(bare), statistics.median(trainer)
    return {
        "config": cfg.to_dict(),
        "rounds": args.rounds,
        "bare_images_per_s": bare,
        "trainer_images_per_s": trainer,
        "bare_median": bare_med,
        "trainer_median": trainer_med,
        "ratio": trainer_med / bare_med,
    }


# ---------------------------------------------------------------------------------------------- demo


def demo_config(epochs: int, fraction: float, project: str) -> TrainConfig:
    return TrainConfig(
        **{**DEMO, "epochs": epochs}, fraction=fraction, project=project, name="train", exist_ok=True
    )


def run_demo(args: argparse.Namespace, project: str) -> dict:
    """`make demo`'s training run; wall time covers set-up, every epoch, validation and saving."""
    from optkit.report.train import TrainDisplay
    from optkit.train.trainer import Trainer

    cfg = demo_config(args.demo_epochs, args.demo_fraction, project).validate()
    t0 = time.perf_counter()
    with TrainDisplay() as display:  # what `optkit train` shows, so the cost matches `make demo`
        result = Trainer(cfg, progress=display).run()
    seconds = time.perf_counter() - t0  # s
    return {
        "config": cfg.to_dict(),
        "is_make_demo": args.demo_epochs == DEMO["epochs"] and args.demo_fraction == 1.0,
        "seconds": seconds,
        "epochs": result.epoch,
        "best_top1": result.best_fitness,
        "best_epoch": result.best_epoch,
        "final": result.final,
        "images_per_s": result.images_per_s,
    }


# ---------------------------------------------------------------------------------------- contention

# label -> (environment added to the child's, extra `optkit train` arguments). "optkit default" is what
# a user gets (optkit.threads: the CPU use of other processes sampled at start; on an idle machine every
# core spinning 30,000 times, beside a busy core a thread fewer spinning 3,000 times). The others fix a
# wait policy and the thread count (OMP_NUM_THREADS: one per core), which optkit keeps.
ALL_CORES = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
THREADING = {
    "optkit default": ({}, []),
    "3,000 spins": ({"GOMP_SPINCOUNT": "3000", "OMP_NUM_THREADS": ALL_CORES}, []),  # optkit's earlier default
    "torch default": ({"GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": ALL_CORES}, []),  # libgomp's count
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": ALL_CORES}, []),
    "1 thread": ({}, ["--threads", "1"]),
}


def train_once(env_extra: dict, args: list[str], project: str, busy: bool) -> float:
    """images/s of one `optkit train` process (its training part), optionally beside a busy process."""
    import json
    import subprocess

    policy = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")  # each variant sets its own
    env = {k: v for k, v in os.environ.items() if k not in policy}
    env.update(env_extra)
    command = [
        sys.executable,
        "-m",
        "optkit",
        "train",
        *CONTENTION,
        *args,
        "--project",
        project,
        "--name",
        "c",
        "--exist-ok",
        "--json",
    ]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise SystemExit(f"optkit train failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)["images_per_s"]


def run_contention(args: argparse.Namespace, project: str) -> dict:
    cases = [(label, busy) for label in THREADING for busy in (False, True)]
    runs: dict[str, list[float]] = {f"{label}|{busy}": [] for label, busy in cases}
    err().print("contention: warm-up run (untimed) ...")
    train_once({}, [], project, busy=False)
    for r in range(args.contention_rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]  # rotate, so no case always runs first
        for label, busy in order:
            env_extra, extra = THREADING[label]
            runs[f"{label}|{busy}"].append(train_once(env_extra, extra, project, busy))
            err().print(
                f"round {r + 1}: {label}, {'busy' if busy else 'idle'}: "
                f"{runs[f'{label}|{busy}'][-1]:,.0f} img/s"
            )
    medians = {key: statistics.median(values) for key, values in runs.items()}
    return {
        "command": ["optkit", "train", *CONTENTION],
        "rounds": args.contention_rounds,
        "images_per_s": runs,
        "medians": medians,
    }


def contention_rows(c: dict) -> list[dict]:
    m = c["medians"]
    rows = []
    for label in THREADING:
        rows.append(_row(f"{label}: idle", m[f"{label}|False"], "img/s", None, None))
        rows.append(_row(f"{label}: one core busy", m[f"{label}|True"], "img/s", None, None))
    default_idle, default_busy = m["optkit default|False"], m["optkit default|True"]
    busy_ratio = default_busy / default_idle
    idle_ratio = default_idle / m["torch default|False"]
    rows.append(
        _row(
            "optkit default: busy / idle",
            busy_ratio,
            "x",
            f">= {MIN_BUSY_RATIO}",
            busy_ratio >= MIN_BUSY_RATIO,
        )
    )
    rows.append(
        _row(
            "optkit default idle / torch default idle",
            idle_ratio,
            "x",
            f">= {MIN_IDLE_RATIO}",
            idle_ratio >= MIN_IDLE_RATIO,
        )
    )
    return rows


# -------------------------------------------------------------------------------------------- report


def figures(
    overhead: dict | None, demo: dict | None, generation_s: float | None, contention: dict | None = None
) -> list[dict]:
    """One row per figure: name, value, unit, target (text), ok (None: no target)."""
    rows = []
    if generation_s is not None:
        rows.append(_row("dataset generation (not timed below)", generation_s, "s", None, None))
    if overhead:
        rows.append(_row("bare loop, median", overhead["bare_median"], "img/s", None, None))
        rows.append(_row("trainer, median", overhead["trainer_median"], "img/s", None, None))
        ratio = overhead["ratio"]
        rows.append(_row("trainer / bare", ratio, "x", f">= {MIN_RATIO}", ratio >= MIN_RATIO))
    if demo:
        suffix = "" if demo["is_make_demo"] else " (smoke, not make demo)"
        seconds, top1 = demo["seconds"], demo["best_top1"]
        ok_time = seconds <= MAX_DEMO_SECONDS
        rows.append(_row(f"demo wall time{suffix}", seconds, "s", f"<= {MAX_DEMO_SECONDS:.0f} s", ok_time))
        rows.append(_row(f"demo epochs{suffix}", demo["epochs"], "", None, None))
        rows.append(
            _row(
                f"demo best val top-1{suffix}",
                100 * top1,
                "%",
                f">= {100 * MIN_TOP1:.0f} %",
                top1 >= MIN_TOP1,
            )
        )
    if contention:
        rows.extend(contention_rows(contention))
    return rows


def _row(name: str, value: float, unit: str, target: str | None, ok: bool | None) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok}


def print_table(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="optkit train benchmark")
    for col in ("figure", "value", "target", "ok"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        value = f"{r['value']:,.0f}" if r["unit"] == "img/s" else f"{r['value']:,.2f}"
        value = str(r["value"]) if isinstance(r["value"], int) else value
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "[red]NO[/red]")
        table.add_row(r["name"], f"{value} {r['unit']}".strip(), r["target"] or "", ok)
    out().print(table)


def write_json(path: str, record: dict) -> None:
    import json

    from optkit.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(record, indent=2) + "\n")  # creates the folder


def environment() -> dict:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": cpus,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    args = parse_args()
    generation_s = prepare_data(DATA)  # s; None when the dataset was already cached
    overhead = demo = contention = None
    with tempfile.TemporaryDirectory(prefix="optkit-bench-") as project:
        if not args.skip_overhead:
            overhead = run_overhead(args, project)
        if not args.skip_demo:
            demo = run_demo(args, project)
        if args.contention:
            contention = run_contention(args, project)
    rows = figures(overhead, demo, generation_s, contention)
    print_table(rows)
    record = {
        **environment(),
        "data_generation_seconds": generation_s,
        "overhead": overhead,
        "demo": demo,
        "contention": contention,
        "figures": rows,
    }
    write_json(args.out, record)
    err().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
