"""optkit's INT8 OpenVINO IR against NNCF's on several trained detectors (issue 16).

A quantized detector is one draw of rounding errors: on the demo detector NNCF's IR scored 0.0017 mAP50-95
above optkit's on 3,000 fresh images, consistently over ten 300-image chunks, so the image sample cannot
explain it; whether the recipe or that one model's draw does, only other detectors can tell. Each detector
(--weights, and --seeds: yolo-det-n trained here as `make demo` trains it, with those seeds) goes through
the files of benchmarks/openvino_vs_nncf.py: optkit's fp32 ONNX and IR, `ptq-calibrate` (its default
method) and the INT8 IR, and NNCF's `nncf.quantize` (default preset, post-processing kept float) of the
same fp32 ONNX on the same calibration images. `optkit val` then scores the three IRs on --fresh new
builtin:shapes-det images (seed 7: not the val split the checkpoints were chosen on), at f32 and at
OpenVINO's default precision (bf16 on CPUs that have it). Nothing is timed.

Target (issue 16): optkit's INT8 IR at least as accurate as NNCF's; here, on average over the detectors.

    .venv/bin/python benchmarks/det_int8_draws.py --weights runs/demo/det/weights/best.pt --seeds 1,2
    .venv/bin/python benchmarks/det_int8_draws.py --smoke  # tiny sizes: checks the script only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openvino_vs_nncf import FRESH_SEED, optkit_files, peer_files, run_and_write  # noqa: E402
from quant import RANDOM_INIT_ATOL, git_state, optkit  # noqa: E402

from optkit.report.console import err  # noqa: E402

MODEL = "yolo-det-n"
DATA = "builtin:shapes-det"
DEMO_TRAIN = {"imgsz": 96, "epochs": 11}  # the Makefile's DET_IMGSZ and DET_EPOCHS
PRECISIONS = ("f32", "default")
SMOKE = dict(fresh=32, num_images=16, epochs=1, fraction=0.05)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", default=[], help="a trained detector's best.pt (repeatable)")
    p.add_argument("--seeds", default="", help="comma-separated: also train yolo-det-n with these seeds")
    p.add_argument("--epochs", type=int, default=DEMO_TRAIN["epochs"], help="for --seeds")
    p.add_argument("--fraction", type=float, default=1.0, help="of the train split, for --seeds (smoke runs)")
    p.add_argument("--fresh", type=int, default=3000, help="fresh builtin:shapes-det images to score on")
    p.add_argument("--num-images", type=int, default=512, help="calibration images")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one seed: a check of the script only")
    p.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=Path("results/det_int8_draws.json"))
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.int8_atol = None
    if args.smoke:
        vars(args).update(SMOKE, seeds=args.seeds or [1], int8_atol=RANDOM_INIT_ATOL)
    if not args.weights and not args.seeds:
        p.error("give --weights and/or --seeds")
    return args


def detectors(work: Path, args) -> dict[str, Path]:
    """{name: best.pt}: the --weights files, then one trained here per --seeds seed."""
    found = {f"{Path(w).parent.parent.name or 'weights'}-{i}": Path(w) for i, w in enumerate(args.weights)}
    for seed in args.seeds:
        name = f"seed{seed}"
        optkit("train", "--model", MODEL, "--data", DATA, "--imgsz", str(DEMO_TRAIN["imgsz"]), "--epochs",
               str(args.epochs), "--fraction", str(args.fraction), "--seed", str(seed), "--cache",
               "--project", str(work / "train"), "--name", name, "--exist-ok")  # fmt: skip
        found[name] = work / "train" / name / "weights" / "best.pt"
    return found


def fresh_data(work: Path, n: int) -> Path:
    """data.yaml of n new builtin:shapes-det val images (seed FRESH_SEED), generated once into `work`."""
    from optkit.data.shapes_det import generate_shapes_det

    root = work / f"shapes-det-fresh-{n}"
    if not (root / "data.yaml").is_file():
        err().print(f"generating {n} fresh builtin:shapes-det images (seed {FRESH_SEED}) ...")
        generate_shapes_det(root, n_train=1, n_val=n, seed=FRESH_SEED)
    return root / "data.yaml"


def scores(files: dict[str, Path], data: Path) -> dict:
    """{ir: {precision: {map, map50, runtime}}} of the fp32, optkit and NNCF IRs on `data`."""
    result = {}
    for name in ("fp32 ir", "optkit ir", "nncf ir"):
        result[name] = {}
        for precision in PRECISIONS:
            extra = [] if precision == "default" else ["--precision", precision]
            r = optkit("val", str(files[name]), "--data", str(data), *extra)
            result[name][precision] = {"map": r["map"], "map50": r["map50"], "runtime": r["runtime"]}
    return result


def detector_row(work: Path, name: str, pt: Path, data: Path, args) -> dict:
    err().print(f"{name}: optkit's and NNCF's INT8 IRs of {pt} ...")
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    files, facts = optkit_files(folder, pt, MODEL, args)
    facts["peers"] = peer_files(folder, pt, MODEL, files, args)
    return {"name": name, "checkpoint": str(pt), "scores": scores(files, data), "ptq": facts["ptq"]}


def summary(rows: list[dict]) -> dict:
    """Per precision: optkit's IR minus NNCF's (mAP50-95) per detector, their mean, and the count ahead."""
    result = {}
    for precision in PRECISIONS:
        diffs = [
            r["scores"]["optkit ir"][precision]["map"] - r["scores"]["nncf ir"][precision]["map"]
            for r in rows
        ]
        result[precision] = {
            "differences": diffs,
            "mean": statistics.mean(diffs),
            "optkit_at_least_nncf": sum(d >= 0 for d in diffs),
            "detectors": len(diffs),
        }
    return result


def markdown(record: dict) -> str:
    lines = [
        f"# optkit's INT8 IR vs NNCF's on {len(record['rows'])} detectors ({record['started']})",
        "",
        f"mAP50-95 on {record['args']['fresh']} fresh builtin:shapes-det images (seed {FRESH_SEED}), "
        "`optkit val` of each OpenVINO IR at f32 / at OpenVINO's default precision.",
        "",
        "| detector | fp32 IR | optkit INT8 IR | NNCF INT8 IR | optkit - NNCF |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        s = row["scores"]
        cells = [
            " / ".join(f"{s[ir][p]['map']:.4f}" for p in PRECISIONS)
            for ir in ("fp32 ir", "optkit ir", "nncf ir")
        ]
        diff = " / ".join(f"{s['optkit ir'][p]['map'] - s['nncf ir'][p]['map']:+.4f}" for p in PRECISIONS)
        lines.append(f"| {row['name']} | {' | '.join(cells)} | {diff} |")
    mean = record["summary"]
    lines += [
        "",
        "optkit - NNCF, mean over the detectors: "
        + ", ".join(
            f"{p} {mean[p]['mean']:+.4f} (optkit at least NNCF on {mean[p]['optkit_at_least_nncf']} of "
            f"{mean[p]['detectors']})"
            for p in PRECISIONS
        ),
    ]
    return "\n".join(lines) + "\n"


def run(args, work: Path) -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = fresh_data(work, args.fresh)
    rows = [detector_row(work, name, pt, data, args) for name, pt in detectors(work, args).items()]
    return {
        "started": started,
        "git": git_state(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
        "summary": summary(rows),
    }


def main() -> int:
    args = parse_args()
    record = run_and_write(args, run, "optkit-bench-draws-", markdown)
    print(markdown(record))
    err().print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
