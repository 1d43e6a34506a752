"""OpenVINO benchmark (issue 16, "Must show"), one run: which runtime and which file to ship on this CPU.
Writes results/openvino.json and .md, prints the table.

Models: resnet18 (ReLU), mobilenet-v2 (ReLU6) and yolo-cls-s (SiLU), latency at 224 px, and yolo-det-n
(SiLU), latency at 640 px; `--models yolo-cls-n --weights yolo-cls-n=runs/demo/train/weights/best.pt`
runs the demo's classifier (224 px). For each, every optkit step through the CLI as a user runs it
(`optkit ... --json`, the repo's .venv):
1. train it briefly (the classifiers on --data, builtin:shapes by default, at --imgsz 64; the detector on
   builtin:shapes-det at --det-imgsz 96), or take --weights MODEL=best.pt;
2. `export --dynamic` (fp32 ONNX) and `export --format openvino --dynamic` (fp32 IR);
   `ptq-calibrate --num-images N`, then of its INT8 checkpoint `export --int8-target onnxruntime
   --dynamic` (optkit's ONNX Runtime file) and `export --format openvino --dynamic` (optkit's INT8 IR:
   converted from the Q/DQ flavour optkit.workflows.export.openvino_int8_target chooses);
3. peers on the same fp32 ONNX, calibrated on the images ptq-calibrate calibrates on (the train split,
   validation transforms, N spread evenly):
   - ONNX Runtime `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, MinMax),
   - NNCF `nncf.quantize` (its default preset; for the detector the post-processing after the head's
     output convolutions kept float, as benchmarks/detect_quant.py does), run by OpenVINO (converted to
     an IR with optkit's metadata so that `optkit val` runs it in OpenVINO);
4. accuracy: `optkit val` of every file in the runtime it is shipped for (IRs at OpenVINO's default
   precision): top-1 on the classifiers' val split, mAP50-95 on the detector's. For a classifier the two
   INT8 IRs are also compared image by image (paired): how many images only optkit's gets right and only
   NNCF's, the difference with its 95% interval, and the exact McNemar p-value (the chance of a split at
   least this uneven if both were equally accurate). On builtin:shapes, `--fresh-val N` (default 16000)
   repeats that on N more images from the same generator with another seed: 1,600 val images cannot tell
   apart INT8 models that differ by a few images (one image is 0.06 pp);
5. latency, batch 1, 2 threads, input shape fixed: ONNX Runtime runs the fp32 ONNX, optkit's INT8 ONNX and
   ORT's; OpenVINO runs the fp32 IR at INFERENCE_PRECISION_HINT f32 and at its default (bf16 on CPUs that
   have it), NNCF's INT8, optkit's INT8 IR, and optkit's onnxruntime-flavour file where OpenVINO can read
   it (its `com.microsoft` ops, e.g. SiLU's QuickGelu, it cannot). Every file is warmed up, then rounds
   interleave all of them, the order turning each round (optkit.measure.latency.time_interleaved); each
   speed-up over ORT fp32 is the median of the per-round ratios (paired: robust to load drifting).

Targets (issue 16): optkit's INT8 IR at least as fast as NNCF's INT8 on OpenVINO, and at least as accurate.
The verdict column says "ok" when the median paired speed ratio is >= 1 and optkit's top-1 (or mAP) is
>= NNCF's on the val split, "tie" where a shortfall is within the noise (speed: the ratio's upper quartile
over the rounds reaches 1; accuracy: McNemar p >= 0.05 on every set compared), "NO" otherwise.

`--variants` also measures the Q/DQ placement of the OpenVINO INT8 flavour (the idle-machine run that
decides optkit.workflows.export.openvino_int8_target by measurement): the IR converted from the tensorrt
flavour (symmetric int8, Q/DQ at each quantized layer's inputs; SiLU as float
Sigmoid * Mul between them, which OpenVINO fuses into one Swish) against the onnxruntime flavour
(uint8 activations, also rounded at Add/Concat/pooling outputs) with each of its SiLU forms
(`--silu-form quickgelu|qlinear`), each converted to an IR where OpenVINO can read it.

Real data: --data takes an ImageFolder (train/ and val/ class folders) instead of builtin:shapes; with
none given the JSON and the table say the built-in set was used.

Needs openvino and nncf (the bench extra: `.venv/bin/pip install -c constraints.txt -e '.[bench]'`).

    .venv/bin/python benchmarks/openvino_vs_nncf.py [--epochs 8] [--rounds 7 --runs 20] [--variants]
        [--weights resnet18=best.pt ...] [--data path/to/imagefolder] [--models resnet18,yolo-det-n]
    .venv/bin/python benchmarks/openvino_vs_nncf.py --smoke  # tiny sizes, 1 round: checks it, times nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from detect_quant import (
    calibration_images,
    nncf_quantize,
    openvino_runner,
    ort_quantize,
    ort_runner,
)
from quant import RANDOM_INIT_ATOL, git_state, optkit

from optkit.io import atomic_write_text  # noqa: E402
from optkit.report.console import err, out  # noqa: E402

THREADS = 2  # = detect_quant.THREADS, which its runners use
CLS_DATA, DET_DATA = "builtin:shapes", "builtin:shapes-det"
# (model, train options, latency px)
MODELS = {
    "resnet18": ({"act": "relu"}, 224),
    "mobilenet-v2": ({}, 224),
    "yolo-cls-s": ({}, 224),
    "yolo-det-n": ({}, 640),
    "yolo-cls-n": ({}, 224),  # the demo's classifier (`--weights yolo-cls-n=runs/demo/train/weights/best.pt`)
}
DEFAULT_MODELS = ("resnet18", "mobilenet-v2", "yolo-cls-s", "yolo-det-n")
SMOKE = dict(epochs=1, det_epochs=1, fraction=0.05, imgsz=32, det_imgsz=64, num_images=16, rounds=1,
             runs=2, warmup=1, latency_imgsz=64, int8_atol=RANDOM_INIT_ATOL, fresh_val=64)  # fmt: skip
FRESH_SEED = 7  # builtin:shapes' own splits are drawn with seed 0; the fresh images with this one
BASE = "ort fp32"  # every speed-up is over this file and runtime
VARIANT_F32 = "ov optkit int8 ir (f32)"  # --variants: optkit's INT8 IR with INFERENCE_PRECISION_HINT f32
SILU_MODELS = ("yolo-cls-s", "yolo-det-n")  # --variants: the SiLU forms matter for these only (the ReLU
# models' onnxruntime-flavour file in OpenVINO is a column of the table already)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    models = ", ".join(MODELS)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated, from: " + models)
    p.add_argument("--data", default=None, help="classifiers' data: an ImageFolder (default builtin:shapes)")
    p.add_argument("--imgsz", type=int, default=64, help="classifiers' training and accuracy size")
    p.add_argument("--det-imgsz", type=int, default=96, help="the detector's training and accuracy size")
    p.add_argument("--latency-imgsz", type=int, default=None, help="override every model's latency size")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--det-epochs", type=int, default=25)
    p.add_argument("--fraction", type=float, default=1.0, help="of the train split (smoke runs)")
    p.add_argument("--num-images", type=int, default=512, help="calibration images")
    p.add_argument(
        "--fresh-val", type=int, default=16000,
        help="builtin:shapes classifiers: also compare the INT8 IRs on this many new images (0: not)",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH", help="skip its training")
    p.add_argument(
        "--int8-atol", type=float, default=None, help="INT8 exports' --atol (smoke: barely trained)"
    )
    p.add_argument("--variants", action="store_true", help="also the OpenVINO INT8 flavour variants")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: a check of the script only")
    p.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=Path("results/openvino.json"))
    args = p.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    args.weights = dict(w.split("=", 1) for w in args.weights)
    return args


# ------------------------------------------------------------------------------------------- files


def is_detector(model: str) -> bool:
    return model.startswith("yolo-det")


def data_of(model: str, args) -> str:
    return DET_DATA if is_detector(model) else (args.data or CLS_DATA)


def trained(work: Path, model: str, args) -> Path:
    """The model's best.pt: --weights MODEL=PATH, else trained briefly here."""
    if model in args.weights:
        return Path(args.weights[model])
    options, _ = MODELS[model]
    detector = is_detector(model)
    train = ["train", "--model", model, "--data", data_of(model, args), "--imgsz",
             str(args.det_imgsz if detector else args.imgsz), "--epochs",
             str(args.det_epochs if detector else args.epochs), "--fraction", str(args.fraction), "--cache",
             "--project", str(work), "--name", model, "--exist-ok"]  # fmt: skip
    for key, value in options.items():
        train += [f"--{key}", value]
    optkit(*train)
    return work / model / "weights" / "best.pt"


def optkit_files(work: Path, pt: Path, model: str, args) -> tuple[dict[str, Path], dict]:
    """optkit's files of checkpoint `pt`: fp32 ONNX and IR, INT8 checkpoint, INT8 ONNX (onnxruntime
    flavour) and INT8 IR; and what the exports reported."""
    stem = work / model
    files = {
        "fp32": Path(f"{stem}-fp32.onnx"),
        "fp32 ir": Path(f"{stem}-fp32_openvino"),
        "optkit ort": Path(f"{stem}-int8.onnx"),
        "optkit ir": Path(f"{stem}-int8_openvino"),
    }
    int8_pt = Path(f"{stem}-int8.pt")
    optkit("export", str(pt), "--dynamic", "-o", str(files["fp32"]))
    fp32_ir = optkit("export", str(pt), "--format", "openvino", "--dynamic", "-o", str(files["fp32 ir"]))
    ptq = optkit("ptq-calibrate", str(pt), "--data", data_of(model, args), "--num-images",
                 str(args.num_images), "-o", str(int8_pt))  # fmt: skip
    atol = int8_atol(args)
    ort = optkit(
        "export",
        str(int8_pt),
        "--int8-target",
        "onnxruntime",
        "--dynamic",
        "-o",
        str(files["optkit ort"]),
        *atol,
    )
    ir = optkit(
        "export", str(int8_pt), "--format", "openvino", "--dynamic", "-o", str(files["optkit ir"]), *atol
    )
    facts = {
        "checkpoint": str(pt),
        "ptq": {k: ptq.get(k) for k in ("method", "num_images", "float_top1", "int8_top1", "skipped")},
        "fp32_ir": fp32_ir["openvino"],
        "optkit_ort": {"max_rel": ort.get("max_rel"), "atol": ort.get("atol"), "int8": ort.get("int8")},
        "optkit_ir": ir["openvino"]
        | {"onnx_max_rel": ir.get("max_rel"), "int8_target": ir["int8"]["target"]},
    }
    return files, facts


def int8_atol(args) -> list[str]:
    """--atol for the INT8 exports: the export's default, or --int8-atol (the smoke run's barely trained
    models leave their calibrated ranges on random inputs, as random-init ones do in benchmarks/quant.py)."""
    return [] if args.int8_atol is None else ["--atol", str(args.int8_atol)]


def peer_files(work: Path, pt: Path, model: str, files: dict[str, Path], args) -> dict:
    """ORT quantize_static and NNCF INT8 of the fp32 ONNX on optkit's calibration images (NNCF's as an
    IR folder carrying optkit's metadata); adds them to `files`, returns their facts."""
    from optkit.ovrt import write_ir

    images = (
        classifier_calibration(pt, args)
        if not is_detector(model)
        else calibration_images(pt, args.num_images)
    )
    stem = work / model
    files["ort peer"] = Path(f"{stem}-ort-peer.onnx")
    seconds = ort_quantize(files["fp32"], files["ort peer"], images)
    nncf_onnx = Path(f"{stem}-nncf.onnx")
    nncf = nncf_quantize(files["fp32"], nncf_onnx, images)
    files["nncf ir"] = Path(f"{stem}-nncf_openvino")
    write_ir(nncf_onnx, files["nncf ir"], onnx_metadata(files["fp32"]))
    return {"num_images": len(images), "ort_seconds": seconds, "nncf": nncf}


def classifier_calibration(pt: Path, args) -> list:
    """The images `optkit ptq-calibrate --num-images` calibrates a classifier on, one [1, 3, S, S]
    float32 array each (train split, validation transforms, spread evenly)."""
    from optkit.checkpoint import load_checkpoint
    from optkit.data import resolve_data
    from optkit.data.subset import split_batches
    from optkit.stages.export import preprocess_of

    ckpt = load_checkpoint(pt)
    spec = resolve_data(args.data or CLS_DATA)
    batches = split_batches(spec.train_dir, ckpt.names, ckpt.imgsz, preprocess_of(ckpt), args.num_images)
    return [x[i : i + 1].numpy() for x in batches for i in range(len(x))]


def onnx_metadata(path: Path) -> dict:
    from optkit.onnxrt import read_metadata

    return read_metadata(path)


def variant_files(work: Path, model: str, files: dict[str, Path], args) -> dict:
    """--variants: the onnxruntime flavour with each SiLU form optkit writes, converted to an IR where
    OpenVINO reads it (added to `files` as "variant ir <form>"); {form: "ok" or why not}."""
    from optkit.ovrt import write_ir
    from optkit.quant.silu_form import FORMS

    int8_pt, done = work / f"{model}-int8.pt", {}
    for form in [f for f in FORMS if f != "auto"]:  # every form the onnxruntime flavour writes
        onnx = work / f"{model}-int8-{form}.onnx"
        try:
            optkit("export", str(int8_pt), "--int8-target", "onnxruntime", "--silu-form", form, "--dynamic",
                   "-o", str(onnx), *int8_atol(args))  # fmt: skip
        except RuntimeError as e:  # e.g. a form beyond the parity tolerance: recorded, the run goes on
            done[form] = f"export failed: {str(e).strip().splitlines()[-1][:160]}"
            continue
        folder = work / f"{model}-int8-{form}_openvino"
        try:
            write_ir(onnx, folder, onnx_metadata(onnx))
        except Exception as e:  # OpenVINO's converter: com.microsoft ops it has no translation for
            done[form] = f"OpenVINO cannot convert it: {why_refused(e)}"
            continue
        files[f"variant ir {form}"] = folder
        done[form] = "ok"
    return done


# ---------------------------------------------------------------------------------------- accuracy


def accuracy(model: str, files: dict[str, Path], args) -> dict:
    """`optkit val` of each file (IRs at OpenVINO's default precision): {file: {metric, runtime}}."""
    metric = "map" if is_detector(model) else "top1"
    result = {}
    for name, path in files.items():
        if name == "fp32 ir":
            continue  # the fp32 IR's parity with the fp32 ONNX is checked by its export
        r = optkit("val", str(path), "--data", data_of(model, args))
        result[name] = {metric: r[metric], "runtime": r.get("runtime")}
    return result


def paired_accuracy(work: Path, model: str, files: dict[str, Path], args) -> dict:
    """Classifiers: optkit's INT8 IR against NNCF's, image by image, on the val split and (builtin:shapes,
    --fresh-val) on new images from the same generator: {set: paired(optkit, nncf) + its folder}."""
    from optkit.measure.paired import paired_top1
    from optkit.tasks import get_task

    if is_detector(model):
        return {}
    spec = data_of(model, args)
    sets = {"val": Path(get_task("classify").resolve_data(spec).val_dir)}
    if spec == CLS_DATA and args.fresh_val:
        sets[f"{args.fresh_val} fresh"] = fresh_shapes(work, args.fresh_val)
    result = {}
    for name, folder in sets.items():
        err().print(f"{model}: optkit's and NNCF's INT8 IRs image by image on the {name} images ...")
        mine, theirs = (per_image_top1(files[k], folder) for k in ("optkit ir", "nncf ir"))
        result[name] = {"folder": str(folder), **paired_top1(mine, theirs)}
    return result


def fresh_shapes(work: Path, n: int) -> Path:
    """The val folder of n new builtin:shapes images (FRESH_SEED), generated once into `work`."""
    from optkit.data.shapes import CLASSES, generate_shapes
    from optkit.tasks.classify import BUILTIN_IMGSZ

    root = work / f"shapes-fresh-{n}"
    if not (root / "val").is_dir():
        err().print(f"generating {n} fresh builtin:shapes images (seed {FRESH_SEED}) ...")
        generate_shapes(root, imgsz=BUILTIN_IMGSZ, n_train=len(CLASSES), n_val=n, seed=FRESH_SEED)
    return root / "val"


def per_image_top1(ir: Path, folder: Path) -> list[bool]:
    """Whether the IR's top class is right, image by image, at OpenVINO's default precision with the
    preprocessing its metadata records (what `optkit val` runs)."""
    import torch

    from optkit.data.folder import ImageFolder
    from optkit.data.transforms import ValTransform
    from optkit.ovrt import OvModel

    net = OvModel(ir)
    meta = net.metadata
    pre = meta["preprocess"]
    transform = ValTransform(meta["imgsz"], mean=pre["mean"], std=pre["std"])
    dataset = ImageFolder(folder, transform, classes=list(meta["names"]))
    right = []
    for start in range(0, len(dataset), 64):
        items = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
        predicted = net(torch.stack([image for image, _ in items])).argmax(1)
        right += (predicted == torch.tensor([label for _, label in items])).tolist()
    return right


# ------------------------------------------------------------------------------------------ timing


def runners(files: dict[str, Path], x, variants: bool) -> tuple[dict, dict]:
    """{label: a call running x once} for every runtime/file pair, and {label: why it cannot run}."""
    from optkit.ovrt import find_ir

    made = {
        BASE: lambda: ort_runner(files["fp32"], x),
        "ort optkit int8": lambda: ort_runner(files["optkit ort"], x),
        "ort quantize_static": lambda: ort_runner(files["ort peer"], x),
        "ov fp32 (f32)": lambda: openvino_runner(find_ir(files["fp32 ir"]), x, "f32"),
        "ov fp32 (default)": lambda: openvino_runner(find_ir(files["fp32 ir"]), x, None),
        "ov nncf int8": lambda: openvino_runner(find_ir(files["nncf ir"]), x, None),
        "ov optkit int8 ir": lambda: openvino_runner(find_ir(files["optkit ir"]), x, None),
        "ov optkit ort-flavour file": lambda: openvino_runner(files["optkit ort"], x, None),
    }
    made |= {
        f"ov {name}": (lambda p=path: openvino_runner(find_ir(p), x, None))
        for name, path in files.items()
        if name.startswith("variant ir")
    }
    if variants:  # the INT8 IR's float layers (SiLU, the head) at f32 instead of the default bf16
        made[VARIANT_F32] = lambda: openvino_runner(find_ir(files["optkit ir"]), x, "f32")
    ready, refused = {}, {}
    for label, make in made.items():
        try:
            ready[label] = make()
        except Exception as e:  # OpenVINO cannot read the file (com.microsoft ops): RuntimeError or its own
            # conversion errors, which share no base class short of Exception
            refused[label] = f"cannot read it: {why_refused(e)}"
    return ready, refused


def why_refused(e: Exception) -> str:
    """The line of OpenVINO's error that says why (the operations it has no conversion rule for); its
    first lines only name source files."""
    lines = [line.strip(" -") for line in str(e).splitlines() if line.strip()]
    return next((line for line in lines if "No conversion rule" in line), lines[-1] if lines else repr(e))[
        :200
    ]


def batch_timer(run):
    """A BatchTimer (optkit.measure.latency) of a call: (untimed runs, timed runs) -> ms of each."""

    def timer(untimed: int, timed: int) -> list[float]:
        for _ in range(untimed):
            run()
        times = []
        for _ in range(timed):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    return timer


def latency(files: dict[str, Path], imgsz: int, args) -> dict:
    """Interleaved rounds of every runtime/file: per-round median ms, and each one's speed-up over BASE."""
    import numpy as np

    from optkit.measure.latency import speedup_stats, time_interleaved

    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), np.float32)
    ready, refused = runners(files, x, args.variants)
    labels = list(ready)
    err().print(f"timing {len(labels)} runtime/file pairs at {imgsz} px, {args.rounds} round(s) ...")
    times = time_interleaved([batch_timer(ready[k]) for k in labels], args.rounds, args.runs, args.warmup,
                             round_warmup=2)  # fmt: skip
    per_round = {k: [statistics.median(r) for r in t] for k, t in zip(labels, times, strict=True)}
    return {
        "imgsz": imgsz,
        "per_round_ms": per_round,
        "median_ms": {k: statistics.median(v) for k, v in per_round.items()},
        "speedup": {k: speedup_stats(per_round[BASE], v) for k, v in per_round.items()},
        "cannot_run": refused,
    }


# ------------------------------------------------------------------------------------------ report

COLUMNS = [  # (table header, latency label, accuracy file)
    ("optkit INT8 on ORT", "ort optkit int8", "optkit ort"),
    ("ORT quantize_static", "ort quantize_static", "ort peer"),
    ("OpenVINO fp32 (f32)", "ov fp32 (f32)", None),
    ("OpenVINO default", "ov fp32 (default)", None),
    ("NNCF INT8 on OpenVINO", "ov nncf int8", "nncf ir"),
    ("optkit INT8 IR on OpenVINO", "ov optkit int8 ir", "optkit ir"),
    ("optkit ORT file on OpenVINO", "ov optkit ort-flavour file", None),
]


def cell(row: dict, label: str, file: str | None) -> str:
    lat = row["latency"]
    if label in lat["cannot_run"]:
        return "cannot read it"
    text = f"{lat['speedup'][label]['speedup']:.2f}x"
    if file is not None:
        metric = row["metric"]
        value = row["accuracy"][file][metric]
        text += f" / {value:.2%}" if metric == "top1" else f" / {value:.3f}"
    return text


def verdicts(row: dict) -> dict:
    """The issue's targets: optkit's INT8 IR vs NNCF's INT8, speed (paired ratio) and accuracy, each "ok",
    "tie" (short, within the noise: see the module docstring) or "NO"."""
    per_round = row["latency"]["per_round_ms"]
    if "ov nncf int8" not in per_round or "ov optkit int8 ir" not in per_round:
        return {}
    ratios = [n / o for n, o in zip(per_round["ov nncf int8"], per_round["ov optkit int8 ir"], strict=True)]
    faster = statistics.median(ratios)  # > 1: optkit's IR faster
    upper = statistics.quantiles(ratios, n=4, method="inclusive")[2] if len(ratios) > 1 else faster
    acc, metric = row["accuracy"], row["metric"]
    ahead = acc["optkit ir"][metric] - acc["nncf ir"][metric]
    noise = bool(row.get("paired")) and all(p["mcnemar_p"] >= 0.05 for p in row["paired"].values())
    speed = "ok" if faster >= 1.0 else "tie" if upper >= 1.0 else "NO"
    accuracy = "ok" if ahead >= 0 else "tie" if noise else "NO"
    return {
        "ir_vs_nncf_speed": faster,
        "ir_vs_nncf_speed_q3": upper,
        "ir_vs_nncf_accuracy": ahead,
        "speed": speed,
        "accuracy": accuracy,
        "ok": speed == accuracy == "ok",
    }


def table_rows(record: dict) -> list[list[str]]:
    rows = []
    for row in record["rows"]:
        fp32 = row["accuracy"]["fp32"][row["metric"]]
        shown = f"{fp32:.2%}" if row["metric"] == "top1" else f"{fp32:.3f}"
        v = row["verdict"]
        verdict = f"speed {v['ir_vs_nncf_speed']:.2f}x {v['speed']}, accuracy {v['accuracy']}" if v else "-"
        rows.append([f"{row['model']} @{row['latency']['imgsz']}", shown]
                    + [cell(row, label, file) for _, label, file in COLUMNS] + [verdict])  # fmt: skip
    return rows


HEADERS = ["model", "fp32 accuracy", *(c[0] for c in COLUMNS), "optkit IR vs NNCF"]


def markdown(record: dict) -> str:
    smoke = record["args"]["smoke"]
    lines = [
        "# OpenVINO vs ONNX Runtime: speed-up over ORT fp32 of the same ONNX / accuracy of each INT8 file",
        "",
        f"{record['started']}; {record['env']}" + (" (SMOKE RUN: not a measurement)" if smoke else ""),
        "",
        f"Batch 1, {THREADS} threads, {record['args']['rounds']} interleaved rounds. Accuracy: top-1 on the "
        f"classifiers' val split, mAP50-95 on the detector's. {record['data_note']}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(record)]
    for row in record["rows"]:
        lines += paired_lines(row) + variant_lines(row)
    lines += ["", "How each figure is measured: the docstring of benchmarks/openvino_vs_nncf.py."]
    return "\n".join(lines) + "\n"


def paired_lines(row: dict) -> list[str]:
    """A classifier's INT8 IRs compared image by image: optkit's against NNCF's, per image set."""
    lines = []
    for name, p in row.get("paired", {}).items():
        low, high = p["diff_ci95"]
        lines.append(
            f"- {row['model']}, {name} ({p['images']} images): optkit IR {p['top1_a']:.2%}, NNCF "
            f"{p['top1_b']:.2%}; only optkit right {p['only_a']}, only NNCF right {p['only_b']}; "
            f"difference {p['diff'] * 100:+.2f} pp (95% {low * 100:+.2f} to {high * 100:+.2f}), "
            f"McNemar p {p['mcnemar_p']:.2f}"
        )
    return ["", *lines] if lines else []


def variant_lines(row: dict) -> list[str]:
    """--variants: the OpenVINO INT8 flavours of one model, speed-up over ORT fp32 (or why not run)."""
    speed, refused = row["latency"]["speedup"], row["latency"]["cannot_run"]
    if VARIANT_F32 not in speed:
        return []

    def shown(label: str, fallback: str = "not run") -> str:
        return f"{speed[label]['speedup']:.2f}x" if label in speed else refused.get(label, fallback)

    shipped = row["optkit_ir"].get("int8_target", "tensorrt")
    lines = ["", f"{row['model']}: OpenVINO INT8 flavours (speed-up over ORT fp32)"]
    lines.append(f"- {shipped} flavour IR (shipped), default precision: {shown('ov optkit int8 ir')}")
    lines.append(f"- {shipped} flavour IR (shipped), f32 hint: {shown(VARIANT_F32)}")
    lines.append(f"- onnxruntime flavour file: {shown('ov optkit ort-flavour file')}")
    for form, state in row["variants"].items():
        accuracy = row["accuracy"].get(f"variant ir {form}", {}).get(row["metric"])
        acc = "" if accuracy is None else f" / {row['metric']} {accuracy:.4f}"
        lines.append(
            f"- onnxruntime flavour, SiLU {form}, as IR: {shown(f'ov variant ir {form}', state)}{acc}"
        )
    return lines


def print_table(record: dict) -> None:
    from rich.table import Table

    smoke = " - SMOKE RUN, not a measurement" if record["args"]["smoke"] else ""
    table = Table(title=f"speed-up over ORT fp32 / INT8 accuracy, batch 1, {THREADS} threads{smoke}")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in table_rows(record):
        table.add_row(*row)
    out().print(table)
    out().print(record["data_note"])
    for row in record["rows"]:
        for line in paired_lines(row)[1:] + variant_lines(row)[1:]:
            out().print(line, highlight=False)


# -------------------------------------------------------------------------------------------- main


def environment() -> str:
    import nncf
    import onnxruntime
    import openvino
    import torch

    load = [round(v, 2) for v in os.getloadavg()]
    return ", ".join([f"torch {torch.__version__}", f"onnxruntime {onnxruntime.__version__}",
                      f"openvino {openvino.__version__.split('-')[0]}", f"nncf {nncf.__version__}",
                      f"{os.cpu_count()} CPUs", f"load average at start {load}"])  # fmt: skip


def model_row(work: Path, model: str, args) -> dict:
    pt = trained(work, model, args)
    files, facts = optkit_files(work, pt, model, args)
    facts["peers"] = peer_files(work, pt, model, files, args)
    variants = variant_files(work, model, files, args) if args.variants and model in SILU_MODELS else {}
    imgsz = args.latency_imgsz or MODELS[model][1]
    row = {
        "model": model,
        "metric": "map" if is_detector(model) else "top1",
        "data": data_of(model, args),
        **facts,
        "variants": variants,
        "accuracy": accuracy(model, files, args),
        "paired": paired_accuracy(work, model, files, args),
        "latency": latency(files, imgsz, args),
        "bytes": {k: size_of(p) for k, p in files.items()},
    }
    row["verdict"] = verdicts(row)
    return row


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def run(args, work: Path) -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    env, git_before = environment(), git_state()
    rows = [model_row(work, model, args) for model in args.models]
    note = (
        f"Classifiers' data: {args.data} (real-data ImageFolder)."
        if args.data
        else "No real-data ImageFolder given (none on this machine, and no downloads): the classifiers used "
        "builtin:shapes; pass --data DIR for the issue's real-data check."
    )
    return {
        "started": started,
        "env": env,
        "git_before": git_before,
        "git_after": git_state(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data_note": note,
        "rows": rows,
    }


def run_and_write(args, run, prefix: str, markdown) -> dict:
    """Check the bench extra, `run(args, work)` in --work (or a temporary folder), write its record to
    --out and `markdown(record)` beside it; the record. Shared with benchmarks/det_int8_draws.py."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        raise SystemExit(
            "needs openvino and nncf: .venv/bin/pip install -c constraints.txt -e '.[bench]'"
        ) from None
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        record = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            record = run(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1, default=str) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(record))
    return record


def main() -> int:
    args = parse_args()
    record = run_and_write(args, run, "optkit-bench-ov-", markdown)
    print_table(record)
    err().print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
