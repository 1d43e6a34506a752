"""INT8 benchmark, measured in one run (writes results/quant.json, prints tables).

1. Accuracy (the demo model: yolo-cls-n trained on builtin:shapes at 64 px; trained first if missing),
   every step through the CLI as a user runs it: `optkit export` + `optkit val` of the fp32 ONNX;
   `optkit ptq-calibrate --num-images 512`, `optkit export --int8-target onnxruntime`, `optkit val`;
   `optkit qat ... --epochs 2 --distill --cache --fraction 0.5`, export of its best.pt, `optkit val`.
   Targets: INT8 ONNX val top-1 within 1.0 pp of fp32 after PTQ, within 0.3 pp after QAT.
   `--qat-sweep` adds the settings of QAT_SWEEP, `--qat KEY=VALUE,...` one more (each about 6 min on 2
   shared cores: QAT runs at about 20-30 images/s here).
2. ONNX Runtime CPU latency at batch 1, `THREADS` intra-op threads: fp32 ONNX vs optkit's INT8 ONNX vs
   the peer, for resnet18 (ReLU) and yolo-cls-s (SiLU) at 224 px (random-init weights, calibrated on
   `--speed-images` train images) and the demo model at 64 px. Each session is warmed up, then rounds
   alternate fp32, optkit, peer; per round the median of `--runs` runs. Reported: the median over rounds,
   and the speed-up as the median of the per-round ratios (paired, robust to load drifting). The same with
   one thread is shown beside it (not judged).
   Targets: resnet18 >= 2.5x, yolo-cls-s >= 1.8x; INT8 file <= 30% of fp32; every Conv int8 in ONNX
   Runtime's optimized graph except the layers optkit keeps float on purpose (export's int8.float_layers).
3. The peer: onnxruntime.quantization.quantize_static (QDQ, per-channel, uint8 activations, int8 weights,
   MinMax) on the same fp32 ONNX, calibrated on the same images optkit calibrates on (train split, val
   transforms, evenly spaced: optkit.data.subset.split_batches). quant_pre_process runs first (symbolic
   shape inference + ONNX Runtime graph optimization) unless `--peer-no-preprocess`. Requirement: optkit's
   INT8 at least as accurate (demo val top-1, optkit PTQ vs peer) and at least as fast (paired ratio;
   TIE where the two are equal within this machine's round-to-round noise: see vs_peer).

The random-init models are calibrated on builtin:shapes' train split through a dataset folder whose
train/ is builtin:shapes' own and whose val/ holds SPEED_VAL_PER_CLASS images per class: ptq-calibrate
always compares float and fake-quant top-1 on the val split, which means nothing for random weights and
would take minutes at 224 px on 2 cores. The calibration images are the same either way.

    .venv/bin/python benchmarks/quant.py [--quick] [--qat-sweep] [--rounds 5 --runs 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ort_timing import alternating_timings

from optkit.io import atomic_write_text
from optkit.report.console import err, out

OPTKIT = str(Path(sys.executable).with_name("optkit"))  # the venv's console script
DATA = "builtin:shapes"
DEMO_BEST = Path("runs/demo/train/weights/best.pt")
DEMO_TRAIN = [  # = the Makefile's demo target
    "train", "--model", "yolo-cls-n", "--data", DATA, "--imgsz", "64", "--epochs", "12", "--cos-lr",
    "--cache", "--project", "runs/demo", "--name", "train", "--exist-ok",
]  # fmt: skip
# (label, model, options, imgsz, speed-up target) for the random-init latency models
SPEED_MODELS = [
    ("resnet18 relu", "resnet18", {"act": "relu"}, 224, 2.5),
    ("yolo-cls-s silu", "yolo-cls-s", {}, 224, 1.8),
]
SPEED_VAL_PER_CLASS = 16  # val images per class in the random-init models' dataset folder
DEMO_PTQ_IMAGES = 512
# QAT checkpoints differ more from their fake-quant model on random inputs (0.144 measured, the default
# onnxruntime tolerance is 0.25): exported with this tolerance, also compared on val images (both in the JSON)
QAT_EXPORT_ATOL = 0.3
RANDOM_INIT_ATOL = 10.0  # export parity tolerance: random-init logits are tiny (relative error is large)
# QAT: the command, then the settings --qat-sweep adds (None: the qat CLI's default)
QAT_MAIN = {"epochs": 2, "lr0": None, "distill": True, "fraction": 0.5}
QAT_SWEEP = [
    {"epochs": 3, "lr0": None, "distill": True, "fraction": 0.5},
    {"epochs": 2, "lr0": 5e-4, "distill": True, "fraction": 0.5},
    {"epochs": 2, "lr0": 5e-4, "distill": False, "fraction": 0.5},
    {"epochs": 2, "lr0": None, "distill": True, "fraction": 1.0},
]
QAT_QUICK = {"epochs": 1, "lr0": None, "distill": True, "fraction": 0.1}
THREADS = 2  # ONNX Runtime intra-op threads (the machine has 2 cores)
# also timed with one thread (shown, not judged): on this shared VM the second core is at times busy with
# someone else's work, and the INT8 graphs (many short ops, each waiting for both threads) lose more then
ONE_THREAD = 1
MAX_PTQ_DROP_PP = 1.0  # fp32 ONNX top-1 - INT8 ONNX top-1, percentage points
MAX_QAT_DROP_PP = 0.3
MAX_SIZE_RATIO = 0.30  # INT8 file / fp32 file
STEPS: list[dict] = []  # every optkit command run, with its wall time (s), for the JSON


# ------------------------------------------------------------------------------------------- the CLI


def optkit(*args: str) -> dict:
    """Run `optkit ARGS --json`; its JSON object. Progress stays on our stderr; a failure raises."""
    cmd = [OPTKIT, *args, "--json"]
    err().print(f"$ optkit {' '.join(args)}", highlight=False)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"optkit {' '.join(args)} exited {done.returncode}:\n{tail}")
    seconds = time.perf_counter() - t0
    STEPS.append({"command": ["optkit", *args], "s": seconds, "load_avg": os.getloadavg()})
    err().print(f"  {seconds:.0f} s", highlight=False)
    return json.loads(done.stdout)


def val_top1(onnx_path: Path) -> float:
    return optkit("val", str(onnx_path), "--data", DATA)["top1"]


def export_int8(pt: Path, output: Path, atol: float | None = None, *extra: str) -> dict:
    extra = (*extra, "--atol", str(atol)) if atol is not None else extra
    return optkit("export", str(pt), "--int8-target", "onnxruntime", "-o", str(output), *extra)


# ------------------------------------------------------------------------------------------ the peer


def peer_quantize(fp32: Path, output: Path, pt: Path, num_images: int, pre_process: bool) -> dict:
    """ONNX Runtime's own static QDQ quantization of `fp32`, calibrated on optkit's calibration images;
    optkit's metadata is copied so that `optkit val` can run it."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from optkit.checkpoint import load_checkpoint
    from optkit.data import resolve_data
    from optkit.data.subset import split_batches
    from optkit.stages.export import preprocess_of

    ckpt = load_checkpoint(pt)
    spec = resolve_data(DATA)
    batches = split_batches(spec.train_dir, ckpt.names, ckpt.imgsz, preprocess_of(ckpt), num_images)
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):  # one image at a time: the fp32 graph has batch 1
        def __init__(self):
            self.items = (
                {name: x[i : i + 1].numpy().astype(np.float32)} for x in batches for i in range(len(x))
            )

        def get_next(self):
            return next(self.items, None)

    t0 = time.perf_counter()
    source = fp32
    if pre_process:
        source = output.with_name(output.stem + "-pre.onnx")
        quant_pre_process(str(fp32), str(source))
    quantize_static(
        str(source),
        str(output),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    seconds = time.perf_counter() - t0
    model = onnx.load(str(output))
    del model.metadata_props[:]
    for p in onnx.load(str(fp32), load_external_data=False).metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(output))
    return {"pre_process": pre_process, "num_images": sum(len(b) for b in batches), "seconds": seconds}


def conv_coverage(path: Path, fp32: Path, float_layers: dict | None) -> dict:
    """Conv layers ONNX Runtime runs in int8 / all Convs of the fp32 graph, and the float ones, each
    matched against the layers optkit keeps float on purpose (`float_layers`: module name -> reason)."""
    import onnx

    from optkit.quant.coverage import int8_coverage

    total = sum(n.op_type == "Conv" for n in onnx.load(str(fp32)).graph.node)
    cov = int8_coverage(path)
    int8_convs = ("QLinearConv", "ConvInteger", "MatMulIntegerToFloat")  # the last: optkit's 1x1 int8 GEMMs
    int8 = sum(cov.int8_ops.get(op, 0) for op in int8_convs)
    float_convs = [n for n in cov.float_layer_names if "/Conv" in n]  # ".../Conv", ".../Conv_output_0_nchwc"
    deliberate = float_layers or {}

    def module_of(node: str) -> str | None:  # "/model/model.0/conv/Conv" -> "model.0.conv"
        dotted = "." + node.strip("/").replace("/", ".") + "."
        return next((m for m in deliberate if f".{m}." in dotted), None)

    unexpected = [n for n in float_convs if module_of(n) is None]
    return {
        "conv_total": total,
        "conv_int8": int8,
        "conv_float": float_convs,
        "kept_float": {m: deliberate[m] for m in deliberate},
        "unexpected_float": unexpected,
        "ok": int8 + len(float_convs) == total and not unexpected,
        "ort": cov.as_dict(),
    }


# ----------------------------------------------------------------------------------------- artifacts


def demo_checkpoint(path: Path) -> tuple[Path, dict]:
    """The demo model at `path` (<project>/<name>/weights/best.pt), trained there first if missing; and
    what identifies it (others may retrain runs/demo while this runs: the JSON says which file it was)."""
    from optkit.checkpoint import load_checkpoint
    from optkit.stages.export import sha256_file

    if not path.exists():
        err().print(f"{path} missing: training the demo model first")
        where = ["--project", str(path.parents[2]), "--name", path.parents[1].name]
        optkit(*DEMO_TRAIN[: DEMO_TRAIN.index("--project")], *where, "--exist-ok")
    ckpt = load_checkpoint(path)
    return path, {
        "path": str(path),
        "sha256": sha256_file(path),
        "epoch": ckpt.epoch,
        "metrics": ckpt.metrics,
    }


def speed_dataset(folder: Path) -> Path:
    """builtin:shapes' train split with a small val split (see the module docstring)."""
    from optkit.data import resolve_data
    from optkit.data.folder import ImageFolder

    spec = resolve_data(DATA)
    root = folder / "shapes-small-val"
    (root / "val").mkdir(parents=True)
    (root / "train").symlink_to(spec.train_dir, target_is_directory=True)
    for name in spec.names:
        files = sorted(p for p in (spec.val_dir / name).iterdir() if p.is_file())
        (root / "val" / name).mkdir()
        for p in files[:: max(1, len(files) // SPEED_VAL_PER_CLASS)][:SPEED_VAL_PER_CLASS]:
            shutil.copy2(p, root / "val" / name / p.name)
    ImageFolder(root / "val", None, classes=list(spec.names))  # fails now if the copy is unreadable
    return root


def random_checkpoint(folder: Path, label: str, model: str, options: dict, imgsz: int) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data import resolve_data
    from optkit.models import create_model

    names = resolve_data(DATA).names
    m = create_model(model, num_classes=len(names), **options)
    return save_checkpoint(checkpoint_from_model(m, names, imgsz), folder / f"{label.replace(' ', '-')}.pt")


def quantized_files(folder: Path, pt: Path, data: str, num_images: int, atol: float | None, args) -> dict:
    """fp32 ONNX, optkit's PTQ checkpoint and onnxruntime INT8 ONNX, and the peer, for checkpoint `pt`."""
    stem = folder / pt.stem
    files = {"fp32": Path(f"{stem}-fp32.onnx"), "optkit": Path(f"{stem}-int8.onnx")}
    fp32 = optkit("export", str(pt), "-o", str(files["fp32"]))
    ptq = optkit(
        "ptq-calibrate", str(pt), "--data", data, "--num-images", str(num_images), "-o", f"{stem}-int8.pt"
    )
    int8 = export_int8(Path(f"{stem}-int8.pt"), files["optkit"], atol)
    files["peer"] = Path(f"{stem}-peer.onnx")
    peer = peer_quantize(files["fp32"], files["peer"], pt, num_images, not args.peer_no_preprocess)
    return {
        "files": files,
        "int8_pt": Path(f"{stem}-int8.pt"),
        "ptq": {k: ptq[k] for k in ("method", "num_images", "float_top1", "int8_top1", "sqnr_db", "skipped")},
        "export": {k: int8[k] for k in ("max_rel", "top1_agreement", "atol")}
        | {"fp32_max_rel": fp32["max_rel"]},
        "int8": int8["int8"],
        "peer": peer,
        "bytes": {k: p.stat().st_size for k, p in files.items()},
        "coverage": conv_coverage(files["optkit"], files["fp32"], int8["int8"].get("float_layers")),
        "peer_coverage": conv_coverage(files["peer"], files["fp32"], None),
    }


# -------------------------------------------------------------------------------------------- timing


def speed_row(label: str, imgsz: int, target: float | None, made: dict, args) -> dict:
    per_round = alternating_timings(made["files"], imgsz, THREADS, args.rounds, args.runs, args.warmup)
    med = {k: statistics.median(v) for k, v in per_round.items()}

    def paired(a: str, b: str) -> float:  # median over rounds of a's time / b's time
        return statistics.median(x / y for x, y in zip(per_round[a], per_round[b], strict=True))

    one = alternating_timings(made["files"], imgsz, ONE_THREAD, args.rounds, args.runs, args.warmup)
    row = {
        "label": label,
        "imgsz": imgsz,
        "target_speedup": target,
        "rounds_ms": per_round,
        "median_ms": med,
        "speedup": paired("fp32", "optkit"),
        "peer_speedup": paired("fp32", "peer"),
        "optkit_vs_peer": paired("peer", "optkit"),  # > 1: optkit faster
        "one_thread": {
            "rounds_ms": one,
            "median_ms": {k: statistics.median(v) for k, v in one.items()},
            "speedup": statistics.median(a / b for a, b in zip(one["fp32"], one["optkit"], strict=True)),
            "peer_speedup": statistics.median(a / b for a, b in zip(one["fp32"], one["peer"], strict=True)),
        },
        "load_avg": os.getloadavg(),
        **{k: made[k] for k in ("ptq", "export", "peer", "bytes", "coverage", "peer_coverage")},
        "float_layers": made["int8"].get("float_layers"),
        "size_ratio": made["bytes"]["optkit"] / made["bytes"]["fp32"],
        "peer_size_ratio": made["bytes"]["peer"] / made["bytes"]["fp32"],
    }
    row["vs_peer"] = vs_peer(row)
    err().print(
        f"{label} @{imgsz}, load {row['load_avg'][0]:.1f}: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
        + f"; optkit x{row['speedup']:.2f}, peer x{row['peer_speedup']:.2f}"
        + " (1 thread: optkit x{speedup:.2f}, peer x{peer_speedup:.2f})".format(**row["one_thread"])
    )
    return row


# ------------------------------------------------------------------------------------------ accuracy


def qat_label(s: dict) -> str:
    from optkit.quant.config import QAT_LR0

    lr = f"{QAT_LR0:g} (default)" if s["lr0"] is None else f"{s['lr0']:g}"
    distill = "distill" if s["distill"] else "no distill"
    return f"epochs {s['epochs']}, lr0 {lr}, {distill}, fraction {s['fraction']:g}"


def qat_top1(folder: Path, int8_pt: Path, setting: dict, index: int) -> dict:
    args = ["qat", str(int8_pt), "--data", DATA, "--epochs", str(setting["epochs"]), "--cache"]
    args += ["--fraction", str(setting["fraction"]), "--project", str(folder / "qat"), "--name", f"s{index}"]
    args += ["--distill" if setting["distill"] else "--no-distill"]
    args += ["--lr0", str(setting["lr0"])] if setting["lr0"] is not None else []
    t0 = time.perf_counter()
    r = optkit(*args)
    seconds = time.perf_counter() - t0
    onnx_path = folder / f"qat-s{index}-int8.onnx"
    exported = export_int8(Path(r["best"]), onnx_path, QAT_EXPORT_ATOL, "--data", DATA)
    return {
        "setting": setting,
        "label": qat_label(setting),
        "qat_s": seconds,
        "torch_top1": {k: r.get(k) for k in ("float_top1", "ptq_top1", "qat_top1")},
        "best_epoch": r.get("best_epoch"),
        "export": {k: exported[k] for k in ("max_rel", "atol", "val_top1_agreement")},
        "epoch_top1": epoch_top1(Path(r["save_dir"]) / "results.csv"),
        "onnx_top1": val_top1(onnx_path),
    }


def epoch_top1(results_csv: Path) -> list[float]:
    """Fake-quant val top-1 after each QAT epoch (the trainer's results.csv)."""
    import csv

    with open(results_csv, newline="") as f:
        return [float(row["top1"]) for row in csv.DictReader(f)]


def qat_setting(text: str) -> dict:
    """`epochs=3,lr0=1e-4,distill=0` -> a QAT setting (QAT_MAIN's values for the keys left out)."""
    setting = dict(QAT_MAIN)
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in setting:
            raise argparse.ArgumentTypeError(f"unknown QAT key {key!r} (known: {', '.join(setting)})")
        parse = {"epochs": int, "lr0": float, "distill": lambda v: v not in ("0", "false"), "fraction": float}
        setting[key] = parse[key](value)
    return setting


def demo_accuracy(folder: Path, made: dict, args) -> dict:
    files = made["files"]
    top1 = {name: val_top1(path) for name, path in files.items()}
    settings = [QAT_QUICK] if args.quick else [QAT_MAIN] + args.qat + (QAT_SWEEP if args.qat_sweep else [])
    qat = [qat_top1(folder, made["int8_pt"], s, i) for i, s in enumerate(settings)]
    for q in qat:
        q["drop_pp"] = 100 * (top1["fp32"] - q["onnx_top1"])
        q["ok"] = q["drop_pp"] <= MAX_QAT_DROP_PP
    return {
        "onnx_top1": top1,
        "ptq_drop_pp": 100 * (top1["fp32"] - top1["optkit"]),
        "peer_drop_pp": 100 * (top1["fp32"] - top1["peer"]),
        "qat": qat,
    }


# -------------------------------------------------------------------------------------------- report


def _ok(flag: bool) -> str:
    return "PASS" if flag else "NO"


TIE_BAND = 0.03  # paired per-round ratios of equal graphs spread about +-5% here (resnet18: 0.90-1.05)


def vs_peer(row: dict) -> str:
    """PASS: optkit faster (median paired ratio >= 1); TIE: within TIE_BAND of the peer with rounds won
    both ways (at least 2 each), i.e. no difference this machine can resolve; else NO."""
    ratio = row["optkit_vs_peer"]
    if ratio >= 1.0:
        return "PASS"
    rounds = row["rounds_ms"]
    won = sum(p > o for p, o in zip(rounds["peer"], rounds["optkit"], strict=True))
    lost = len(rounds["optkit"]) - won
    return "TIE" if ratio >= 1 - TIE_BAND and won >= 2 and lost >= 2 else "NO"


def tables(demo: dict, rows: list[dict], quick: bool) -> None:
    from rich.table import Table

    note = " (--quick: not the issue's settings)" if quick else ""
    t = Table(title=f"INT8 accuracy, demo model (yolo-cls-n, builtin:shapes val, 64 px, ONNX Runtime){note}")
    for col in ("artifact", "val top-1", "Δ vs fp32", "target", "ok"):
        t.add_column(col, justify="left" if col == "artifact" else "right")
    top1 = demo["onnx_top1"]
    t.add_row("fp32 ONNX", f"{top1['fp32']:.2%}", "", "", "")
    t.add_row(
        f"optkit PTQ INT8 ({demo['ptq_images']} images)",
        f"{top1['optkit']:.2%}",
        f"{-demo['ptq_drop_pp']:+.2f} pp",
        f"<= {MAX_PTQ_DROP_PP} pp drop",
        _ok(demo["ptq_drop_pp"] <= MAX_PTQ_DROP_PP),
    )
    for q in demo["qat"]:
        t.add_row(
            f"optkit QAT INT8 ({q['label']})",
            f"{q['onnx_top1']:.2%}",
            f"{-q['drop_pp']:+.2f} pp",
            f"<= {MAX_QAT_DROP_PP} pp drop",
            _ok(q["ok"]),
        )
    t.add_row(
        "peer INT8 (ORT quantize_static)",
        f"{top1['peer']:.2%}",
        f"{-demo['peer_drop_pp']:+.2f} pp",
        "optkit PTQ >= peer",
        _ok(top1["optkit"] >= top1["peer"]),
    )
    out().print(t)

    t = Table(
        title=f"ONNX Runtime CPU latency, batch 1, {THREADS} intra-op threads (median ms; x: paired speed-up)"
    )
    for col in (
        "model",
        "fp32 ms",
        "optkit ms",
        "x",
        "target",
        "ok",
        "peer ms",
        "peer x",
        "optkit/peer",
        "ok",
        "x 1 thr",
        "peer x 1 thr",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        m, target = r["median_ms"], r["target_speedup"]
        t.add_row(
            f"{r['label']} @{r['imgsz']}",
            f"{m['fp32']:.2f}",
            f"{m['optkit']:.2f}",
            f"{r['speedup']:.2f}",
            f">= {target}" if target else "",
            _ok(r["speedup"] >= target) if target else "",
            f"{m['peer']:.2f}",
            f"{r['peer_speedup']:.2f}",
            f"{r['optkit_vs_peer']:.2f}x",
            r["vs_peer"],
            f"{r['one_thread']['speedup']:.2f}",
            f"{r['one_thread']['peer_speedup']:.2f}",
        )
    out().print(t)

    t = Table(title="INT8 files and ONNX Runtime's int8 coverage (optimized graph)")
    for col in (
        "model",
        "fp32 MB",
        "optkit MB",
        "ratio",
        "ok",
        "peer MB",
        "ratio",
        "int8/all Conv",
        "ok",
        "peer Conv",
        "kept float (optkit)",
    ):
        t.add_column(col, justify="left" if col in ("model", "kept float (optkit)") else "right")
    for r in rows:
        b, c, pc = r["bytes"], r["coverage"], r["peer_coverage"]
        t.add_row(
            f"{r['label']} @{r['imgsz']}",
            f"{b['fp32'] / 1e6:.2f}",  # bytes to MB
            f"{b['optkit'] / 1e6:.2f}",
            f"{r['size_ratio']:.0%}",
            _ok(r["size_ratio"] <= MAX_SIZE_RATIO),
            f"{b['peer'] / 1e6:.2f}",
            f"{r['peer_size_ratio']:.0%}",
            f"{c['conv_int8']}/{c['conv_total']}",
            _ok(c["ok"]),
            f"{pc['conv_int8']}/{pc['conv_total']}",
            "; ".join(f"{k}: {v}" for k, v in c["kept_float"].items()) or "none",
        )
    out().print(t)
    for r in rows:
        if r["coverage"]["unexpected_float"]:
            names = r["coverage"]["unexpected_float"]
            out().print(f"{r['label']}: Convs left float that optkit did not mean to: {names}")


def git_state() -> dict:
    """The commit and optkit's uncommitted changes (others edit the checkout while this runs)."""

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--short", "optkit").splitlines()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="smoke mode: 1 QAT epoch on 10%%, 128 calibration images"
    )
    p.add_argument("--qat-sweep", action="store_true", help="also the QAT settings of QAT_SWEEP")
    p.add_argument(
        "--qat",
        type=qat_setting,
        action="append",
        default=[],
        metavar="epochs=E,lr0=LR,distill=0|1,fraction=F",
        help="one more QAT setting (repeatable; a key left out keeps QAT_MAIN's value)",
    )
    p.add_argument("--rounds", type=int, default=5, help="alternating latency rounds (>= 3)")
    p.add_argument("--runs", type=int, default=50, help="runs per file per round (>= 50)")
    p.add_argument("--warmup", type=int, default=20, help="runs per session before timing")
    p.add_argument("--speed-images", type=int, default=128, help="calibration images, random-init models")
    p.add_argument("--peer-no-preprocess", action="store_true", help="skip quant_pre_process for the peer")
    p.add_argument("--demo", default=str(DEMO_BEST), help="the demo model's best.pt (trained if missing)")
    p.add_argument("--keep", default=None, help="keep the artifacts in this folder (default: a temp folder)")
    p.add_argument("--out", default="results/quant.json")
    args = p.parse_args()
    if args.rounds < 3 or args.runs < 50:
        p.error("--rounds >= 3 and --runs >= 50")
    import onnxruntime
    import torch

    started, load_before, git_before = time.perf_counter(), os.getloadavg(), git_state()
    demo_images = 128 if args.quick else DEMO_PTQ_IMAGES
    with tempfile.TemporaryDirectory(prefix="optkit-bench-quant-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        demo_pt, demo_id = demo_checkpoint(Path(args.demo))
        demo_made = quantized_files(folder, demo_pt, DATA, demo_images, None, args)
        small = str(speed_dataset(folder))
        made = [
            (
                label,
                imgsz,
                target,
                quantized_files(folder, pt, small, args.speed_images, RANDOM_INIT_ATOL, args),
            )
            for label, model, options, imgsz, target in SPEED_MODELS
            for pt in [random_checkpoint(folder, label, model, options, imgsz)]
        ]
        made.append(("demo yolo-cls-n silu", 64, None, demo_made))
        rows = [speed_row(*item, args) for item in made]  # before QAT, which takes most of the run
        demo = demo_accuracy(folder, demo_made, args)
        demo |= {"checkpoint": demo_id, "ptq_images": demo_images, "ptq": demo_made["ptq"]}
    tables(demo, rows, args.quick)
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": THREADS,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "args": vars(args),
        "git_before": git_before,
        "git_after": git_state(),
        "demo": demo,
        "speed": rows,
        "steps": STEPS,
    }
    atomic_write_text(args.out, json.dumps(record, indent=2, default=str) + "\n")
    err().print(f"wrote {args.out} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
