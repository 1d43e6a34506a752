"""`optkit deploy` benchmark (issue 17), one run: the fastest file within an accuracy budget, against the
best single-stage artifact (PTQ-only INT8 of the unpruned model) and against NNCF's
`quantize_with_accuracy_control` at the same budget. Writes results/deploy.json and .md, prints a table.

For the demo classifier (yolo-cls-n, builtin:shapes, trained at 64 px) and the demo detector (yolo-det-n,
builtin:shapes-det, trained at 96 px), --cls-weights / --det-weights or trained here through the CLI as
the Makefile's demo does. Every optkit step runs through the CLI (`optkit ... --json`, the repo's .venv):
1. `optkit deploy W --data D --max-drop B --imgsz L --threads 2 --json --work WORK/<model>
   -o WORK/<model>-deploy.onnx` (L = the latency size: 224 classifier, 640 detector; deploy measures
   accuracy at the trained size);
2. the single-stage baseline: `export --dynamic` (fp32 ONNX), `ptq-calibrate --num-images N` and
   `export --int8-target onnxruntime --dynamic` of the unpruned checkpoint (PTQ-only INT8);
3. accuracy of the fp32 ONNX, the PTQ-only file and deploy's file by `optkit val` on the val split
   (top-1 / mAP50-95, as fractions; drops are reported in points = fraction x 100);
4. the peer: NNCF `quantize_with_accuracy_control` (OpenVINO backend: the fp32 ONNX converted by
   `openvino.convert_model`) calibrated on the images optkit calibrates on, validated on the val split
   with max_drop = B / 100 (its validation function returns the metric as a fraction, as optkit val
   does): top-1 of the val images preprocessed as optkit does, or mAP50-95 scored by optkit's own
   evaluator (optkit.measure.detect_eval.evaluate_detector on the raw [B, 4 + nc, N] output), so NNCF's
   model is judged by the code that judges optkit's. Its accuracy is that function on its result run by
   OpenVINO at its default precision;
5. latency at L, batch 1, 2 threads: ONNX Runtime runs fp32, PTQ-only INT8 and deploy's file, OpenVINO
   runs NNCF's model (default precision); every file warmed up, then rounds alternate all of them (per
   round the median of --runs runs); speed-ups are medians of per-round ratios over fp32 on ORT, and
   deploy vs PTQ-only likewise (paired: robust to load drifting).

Targets (issue 17, "Must show"): deploy's file within the budget (drop <= 1.0 point of the fp32 ONNX)
and >= 1.3x faster than PTQ-only INT8 on ONNX Runtime; optkit's file within budget and faster on ONNX
Runtime than NNCF's on OpenVINO (both printed with accuracy).

`--target openvino` runs the same comparison on OpenVINO: deploy searches and times IR folders
(`deploy --target openvino`), the single-stage files are the fp32 IR and the PTQ-only INT8 IR
(`export --format openvino --dynamic`), every file runs on OpenVINO at its default precision, speed-ups
are over the fp32 IR, and deploy's IR faces NNCF's on the same runtime. deploy's work folder is shared
between targets: its pruned, fine-tuned and PTQ checkpoints are reused, only export and timing repeat.

The real run (an idle machine; about an hour on 2 cores, most of it deploy's fine-tuning and QAT):

    .venv/bin/python benchmarks/deploy.py

with trained demo checkpoints: `--cls-weights runs/demo/train/weights/best.pt --det-weights
runs/demo/det/weights/best.pt`. Smoke (a check of the script, not a benchmark; output under /tmp):

    .venv/bin/python benchmarks/deploy.py --smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detect_quant import (
    OPTKIT,
    THREADS,
    alternating,
    calibration_images,
    openvino_runner,
    optkit,
    ort_runner,
    paired,
)
from openvino_vs_nncf import classifier_calibration, environment

from optkit.io import atomic_write_text
from optkit.report.console import err, out

# name: (model, data, train px, latency px, training epochs option)
MODELS = {
    "classifier": ("yolo-cls-n", "builtin:shapes", 64, 224, "cls_epochs"),
    "detector": ("yolo-det-n", "builtin:shapes-det", 96, 640, "det_epochs"),
}
BASE = "fp32"  # every speed-up is over this file on the target runtime
TARGETS = ("onnxruntime", "openvino")
SPEEDUP_TARGET = 1.3  # deploy's file vs PTQ-only INT8, both on ONNX Runtime
SMOKE_DEPLOY = ["--prune", "0.3", "--finetune-epochs", "1", "--qat-epochs", "0", "--fraction", "0.05",
                "--num-images", "16", "--rounds", "1", "--runs", "2", "--warmup", "1"]  # fmt: skip
SMOKE = dict(cls_epochs=1, det_epochs=1, fraction=0.05, num_images=16, latency_imgsz=128, rounds=1, runs=2,
             warmup=1, int8_atol=10.0, out=Path("/tmp/optkit-deploy-smoke/deploy.json"),
             deploy_options=SMOKE_DEPLOY)  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--cls-weights", type=Path, help="a trained yolo-cls-n best.pt (skips its training)")
    p.add_argument("--det-weights", type=Path, help="a trained yolo-det-n best.pt (skips its training)")
    p.add_argument("--cls-epochs", type=int, default=12, help="as the Makefile's demo")
    p.add_argument("--det-epochs", type=int, default=11, help="as the Makefile's demo")
    p.add_argument("--fraction", type=float, default=1.0, help="of the train split (smoke runs)")
    p.add_argument("--max-drop", type=float, default=1.0, help="the budget, points of top-1 / mAP50-95")
    p.add_argument("--num-images", type=int, default=256, help="calibration images (PTQ-only and NNCF)")
    p.add_argument("--latency-imgsz", type=int, default=None, help="override every model's latency size")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--int8-atol", type=float, default=None, help="PTQ export's --atol (smoke: barely trained)"
    )
    extra = "an extra `optkit deploy` option (repeatable: --deploy-option=--time-budget=30m)"
    p.add_argument("--deploy-option", dest="deploy_options", action="append", default=[], help=extra)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: a check of the script only")
    p.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="default: results/deploy[-openvino].json")
    p.add_argument("--target", choices=TARGETS, default="onnxruntime", help="deploy's --target")
    args = p.parse_args()
    if args.out is None:
        args.out = Path(
            "results/deploy.json" if args.target == "onnxruntime" else "results/deploy-openvino.json"
        )
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    return args


# ------------------------------------------------------------------------------------------- files


def trained(work: Path, name: str, args) -> Path:
    """The model's best.pt: --cls-weights / --det-weights, else trained here as `make demo` trains it."""
    given = args.cls_weights if name == "classifier" else args.det_weights
    if given is not None:
        return given
    model, data, imgsz, _, epochs = MODELS[name]
    cos_lr = ["--cos-lr"] if name == "classifier" else []  # the demo's classifier recipe
    optkit(
        "train", "--model", model, "--data", data, "--imgsz", str(imgsz), "--epochs",
        str(getattr(args, epochs)), *cos_lr, "--fraction", str(args.fraction), "--cache", "--project",
        str(work), "--name", f"{name}-train", "--exist-ok",
    )  # fmt: skip
    return work / f"{name}-train" / "weights" / "best.pt"  # WORK/<name> is deploy's work folder


def deploy(work: Path, name: str, pt: Path, latency_imgsz: int, args) -> dict:
    """`optkit deploy --json`: its result; when nothing met the budget (exit 1, nothing written) the work
    folder's candidates.json, with "output" None."""
    _, data, _, _, _ = MODELS[name]
    output = work / (f"{name}-deploy.onnx" if args.target == "onnxruntime" else f"{name}-deploy_openvino")
    cmd = [OPTKIT, "deploy", str(pt), "--data", data, "--max-drop", str(args.max_drop), "--imgsz",
           str(latency_imgsz), "--threads", str(THREADS), "--work", str(work / name), "-o", str(output),
           "--target", args.target, *args.deploy_options, "--json"]  # fmt: skip
    err().print(f"$ {' '.join(cmd[1:])}", highlight=False)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode == 0:
        result = json.loads(done.stdout)
    elif done.returncode == 1 and (work / name / "candidates.json").is_file():
        result = json.loads((work / name / "candidates.json").read_text())
        result["output"] = None
    else:
        raise SystemExit(f"optkit deploy exited {done.returncode}")
    result["seconds"] = seconds
    return result


def chosen_row(searched: dict) -> dict:
    """deploy's chosen candidate (its result names it by key), {} when none was within the budget."""
    return next((c for c in searched["candidates"] if c["key"] == searched.get("chosen")), {})


def single_stage(work: Path, name: str, pt: Path, args) -> tuple[dict[str, Path], Path]:
    """({"fp32": ..., "ptq": ...}, the fp32 ONNX NNCF starts from): the unpruned checkpoint's fp32 file
    and its PTQ-only INT8 file for the target: ONNX files (onnxruntime flavour) or IR folders (the
    flavour export picks for OpenVINO)."""
    _, data, _, _, _ = MODELS[name]
    fp32_onnx = work / f"{name}-fp32.onnx"
    optkit("export", str(pt), "--dynamic", "-o", str(fp32_onnx))
    int8_pt = work / f"{name}-int8.pt"
    optkit("ptq-calibrate", str(pt), "--data", data, "--num-images", str(args.num_images), "-o", str(int8_pt))
    atol = [] if args.int8_atol is None else ["--atol", str(args.int8_atol)]
    if args.target == "onnxruntime":
        ptq = work / f"{name}-ptq.onnx"
        optkit("export", str(int8_pt), "--int8-target", "onnxruntime", "--dynamic", *atol, "-o", str(ptq))
        return {"fp32": fp32_onnx, "ptq": ptq}, fp32_onnx
    files = {"fp32": work / f"{name}-fp32_openvino", "ptq": work / f"{name}-ptq_openvino"}
    optkit("export", str(pt), "--format", "openvino", "--dynamic", "-o", str(files["fp32"]))
    optkit("export", str(int8_pt), "--format", "openvino", "--dynamic", *atol, "-o", str(files["ptq"]))
    return files, fp32_onnx


def val_metric(name: str, path: Path) -> float:
    """`optkit val`: top-1 or mAP50-95 as a fraction."""
    _, data, _, _, _ = MODELS[name]
    return optkit("val", str(path), "--data", data)[metric_key(name)]


def metric_key(name: str) -> str:
    return "map" if name == "detector" else "top1"


# ------------------------------------------------------------------------------------------- peer


def val_items(name: str, pt: Path) -> list:
    """The val split as optkit validates it, one (images [1, 3, S, S], targets) batch per image."""
    from optkit.checkpoint import load_checkpoint
    from optkit.stages.export import preprocess_of
    from optkit.tasks import get_task

    ckpt = load_checkpoint(pt)
    _, data_spec, _, _, _ = MODELS[name]
    task = get_task("detect" if name == "detector" else "classify")
    data = task.resolve_data(data_spec)
    return list(task.val_loader(data, ckpt.names, ckpt.imgsz, 1, 0, preprocess_of(ckpt)))


def classifier_top1(compiled, items) -> float:
    """Top-1 (fraction) of an OpenVINO compiled classifier on (image, label) batches."""
    import numpy as np

    right = [int(np.argmax(compiled(x.numpy())[0], axis=1)[0] == int(y[0])) for x, y in items]
    return sum(right) / len(right)


def detector_map(compiled, items) -> float:
    """mAP50-95 (fraction) of an OpenVINO compiled detector, scored by optkit's evaluator on its raw
    [B, 4 + nc, N] output (NMS and matching as `optkit val` does)."""
    import torch

    from optkit.measure.detect_eval import evaluate_detector

    class Raw(torch.nn.Module):  # the compiled model as a module evaluate_detector calls
        def forward(self, images):
            return torch.from_numpy(compiled(images.numpy())[0])

    return evaluate_detector(Raw(), items, torch.device("cpu"))["map"]


def nncf_peer(work: Path, name: str, pt: Path, fp32: Path, args) -> dict:
    """NNCF quantize_with_accuracy_control of the fp32 ONNX (OpenVINO backend), max_drop = the budget as a
    fraction; its IR, its accuracy by the same validation function, the seconds it took."""
    import nncf
    import openvino as ov

    images = calibration_images(pt, args.num_images) if name == "detector" else classifier_cal(pt, args)
    items = val_items(name, pt)
    validate = detector_map if name == "detector" else classifier_top1
    t0 = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        ov.convert_model(str(fp32)),
        calibration_dataset=nncf.Dataset(images),
        validation_dataset=nncf.Dataset(items, lambda item: item[0].numpy()),
        validation_fn=validate,
        max_drop=args.max_drop / 100,  # the validation function returns a fraction; the budget is points
        subset_size=len(images),
    )
    seconds = time.perf_counter() - t0
    xml = work / f"{name}-nncf.xml"
    ov.save_model(quantized, str(xml))
    core = ov.Core()  # both at OpenVINO's default precision, as NNCF's model is timed
    return {
        "ir": xml,
        "accuracy": validate(core.compile_model(str(xml), "CPU"), items),
        "fp32_accuracy": validate(core.compile_model(ov.convert_model(str(fp32)), "CPU"), items),
        "seconds": seconds,
    }


def classifier_cal(pt: Path, args) -> list:
    """openvino_vs_nncf.classifier_calibration on builtin:shapes with this run's --num-images."""
    return classifier_calibration(
        pt, argparse.Namespace(data=MODELS["classifier"][1], num_images=args.num_images)
    )


# ------------------------------------------------------------------------------------------ timing


def latency(files: dict[str, Path], nncf_ir: Path | None, imgsz: int, args) -> dict:
    """Interleaved rounds: the target runtime runs fp32, PTQ-only and deploy's file (ONNX Runtime an
    .onnx, OpenVINO an IR folder), OpenVINO runs NNCF's model."""
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), np.float32)
    runners = {label: runner(path, x) for label, path in files.items() if path is not None}
    if nncf_ir is not None:
        runners["nncf"] = openvino_runner(nncf_ir, x, None)
    err().print(f"timing {len(runners)} files at {imgsz} px, {args.rounds} rounds ...")
    per_round = alternating(runners, args.rounds, args.runs, args.warmup)
    return {
        "per_round_ms": per_round,
        "median_ms": {k: statistics.median(v) for k, v in per_round.items()},
        "speedup": {k: paired(per_round, BASE, k) for k in per_round},
        "deploy_vs_ptq": paired(per_round, "ptq", "deploy") if "deploy" in per_round else None,
        "deploy_vs_nncf": paired(per_round, "nncf", "deploy")
        if {"deploy", "nncf"} <= set(per_round)
        else None,
    }


def runner(path: Path, x):
    """ONNX Runtime for an .onnx file, OpenVINO (default precision) for an IR folder."""
    if path.is_dir():
        from optkit.ovrt import find_ir

        return openvino_runner(find_ir(path), x, None)
    return ort_runner(path, x)


# ------------------------------------------------------------------------------------------ run


def model_record(work: Path, name: str, args) -> dict:
    imgsz = args.latency_imgsz or MODELS[name][3]
    pt = trained(work, name, args)
    searched = deploy(work, name, pt, imgsz, args)
    files, fp32_onnx = single_stage(work, name, pt, args)
    files["deploy"] = Path(searched["output"]) if searched.get("output") else None
    accuracy = {label: val_metric(name, path) for label, path in files.items() if path is not None}
    peer = nncf_peer(work, name, pt, fp32_onnx, args)
    accuracy["nncf"] = peer["accuracy"]
    fp32_by_peer_fn = peer["fp32_accuracy"]  # the peer's validation function on the fp32 model: = val's
    timing = latency(files, peer["ir"], imgsz, args)
    drops = {label: (accuracy["fp32"] - value) * 100 for label, value in accuracy.items()}
    chosen = chosen_row(searched)
    return {
        "model": MODELS[name][0],
        "target": args.target,
        "weights": str(pt),
        "metric": metric_key(name),
        "latency_imgsz": imgsz,
        "accuracy": accuracy,
        "drop_points": drops,
        "within": {label: drop <= args.max_drop for label, drop in drops.items()},
        "timing": timing,
        "deploy": {
            "chosen": chosen.get("label"),
            "config": chosen.get("config"),
            "own_drop": chosen.get("drop"),
            "own_speedup": chosen.get("speedup"),
            "candidates": len(searched.get("candidates", [])),
            "seconds": searched["seconds"],
            "error": searched.get("error"),
        },
        "nncf_seconds": peer["seconds"],
        "fp32_by_nncf_validation_fn": fp32_by_peer_fn,
        "files": {k: str(v) for k, v in files.items()} | {"nncf": str(peer["ir"])},
    }


def table_rows(name: str, r: dict) -> list[list[str]]:
    target = r.get("target", "onnxruntime")
    runtime = {"fp32": target, "ptq": target, "deploy": target, "nncf": "openvino"}
    artifact = {
        "fp32": "fp32 ONNX" if target == "onnxruntime" else "fp32 IR",
        "ptq": "PTQ-only INT8",
        "deploy": "optkit deploy",
        "nncf": "NNCF acc-ctrl",
    }
    rows = []
    for label in ("fp32", "ptq", "deploy", "nncf"):
        if label not in r["accuracy"]:
            rows.append([name, artifact[label], runtime[label], "none within budget", "", "", "", "", "no"])
            continue
        config = r["deploy"]["chosen"] or "" if label == "deploy" else ""
        rows.append([
            name, artifact[label], runtime[label], f"{100 * r['accuracy'][label]:.2f}",
            f"{r['drop_points'][label]:+.2f}", f"{r['timing']['median_ms'][label]:.2f}",
            f"{r['timing']['speedup'][label]:.2f}x", config, "yes" if r["within"][label] else "no",
        ])  # fmt: skip
    return rows


HEADER = ["model", "artifact", "runtime", "accuracy", "drop (pt)", "ms", "vs fp32", "chosen config",
          "within budget"]  # fmt: skip


def verdicts(r: dict) -> str:
    t = r["timing"]
    vs_ptq = "n/a" if t["deploy_vs_ptq"] is None else f"{t['deploy_vs_ptq']:.2f}x"
    vs_nncf = "n/a" if t["deploy_vs_nncf"] is None else f"{t['deploy_vs_nncf']:.2f}x"
    target = r.get("target", "onnxruntime")
    return (f"{r['model']}: deploy vs PTQ-only {vs_ptq} (target >= {SPEEDUP_TARGET}x), deploy ({target}) vs "
            f"NNCF (openvino) {vs_nncf}, deploy within budget: {r['within'].get('deploy', False)}; NNCF's "
            f"validation function on the fp32 model {100 * r['fp32_by_nncf_validation_fn']:.2f} "
            f"(optkit val {100 * r['accuracy']['fp32']:.2f})")  # fmt: skip


def markdown(record: dict) -> str:
    lines = [f"# optkit deploy (issue 17){' — SMOKE RUN, not a benchmark' if record['smoke'] else ''}", "",
             f"Budget {record['max_drop']} point(s), target {record['target']}; {record['environment']}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
    for name, r in record["models"].items():
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(name, r)]
    lines += [""] + [f"- {verdicts(r)}" for r in record["models"].values()]
    return "\n".join(lines) + "\n"


def print_table(record: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"optkit deploy --target {record['target']}, budget {record['max_drop']} point(s)"
        + (" (SMOKE)" if record["smoke"] else "")
    )
    for column in HEADER:
        table.add_column(column)
    for name, r in record["models"].items():
        for row in table_rows(name, r):
            table.add_row(*row)
    out().print(table)
    for r in record["models"].values():
        out().print(verdicts(r), highlight=False)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="optkit-deploy-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        record = {
            "smoke": args.smoke,
            "max_drop": args.max_drop,
            "target": args.target,
            "environment": environment(),
            "threads": THREADS,
            "rounds": args.rounds,
            "runs": args.runs,
            "models": {name: model_record(work, name, args) for name in args.models},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1, default=str))
    atomic_write_text(args.out.with_suffix(".md"), markdown(record))
    print_table(record)
    err().print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
