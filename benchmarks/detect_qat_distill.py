"""QAT of a detector: which distillation from the float model recovers more mAP (issue 15, part 4)?

One float detector (a trained optkit checkpoint), one PTQ checkpoint made from it (max calibration, the
DFL's fixed conv float), then the same short QAT run (same seed, data, epochs, learning rate) with:
no distillation; the head's distillation (DFL bin KL + class KL, optkit.tasks.detect_distill); the head's
plus channel-wise distillation of the neck maps. An accuracy comparison on val (mAP50-95, mAP50 of
best.pt), never a timing. Writes results/detect_qat_distill.json and prints a table.

    python benchmarks/detect_qat_distill.py runs/det/weights/best.pt --data builtin:shapes-det \
        --epochs 2 --fraction 0.5

Measured (2026-12-02, 2 cores shared with other jobs; accuracy only): yolo-det-n trained 10 epochs at
96 px on builtin:shapes-det (float mAP50-95 / mAP50 0.4957 / 0.7198), PTQ max on 256 images (0.4922 /
0.7167), `--epochs 1 --fraction 0.1 --batch-size 16` (results/detect_qat_distill.json):

    variant                  mAP50-95  mAP50
    none                       0.4997  0.7213
    head                       0.4983  0.7202
    head+features              0.4979  0.7227
    head-x10                   0.4962  0.7220
    head-x10+features-x10      0.4938  0.7187

optkit.tasks.detect_distill keeps the head's distillation at gain 1, features off (its DEFAULT_GAINS).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

VARIANTS = {  # distillation gains (optkit.tasks.detect_distill); None: no distillation
    "none": None,
    "head": {"box": 1.0, "cls": 1.0, "features": 0.0},
    "head+features": {"box": 1.0, "cls": 1.0, "features": 1.0},
    "head-x10": {"box": 10.0, "cls": 10.0, "features": 0.0},
    "head-x10+features-x10": {"box": 10.0, "cls": 10.0, "features": 10.0},
}


def quantize(src: Path, data: str, out: Path, images: int) -> Path:
    """ptq-calibrate's steps in-process: fuse, INT8 quantizers (DFL conv float), max calibration."""
    from optkit.checkpoint import build_model, load_checkpoint, save_checkpoint
    from optkit.data.subset import evenly_spaced, image_batches
    from optkit.quant.config import QuantConfig
    from optkit.quant.ptq import calibrate_on, fused_for_quantization, onnx_ranges_of, quantized_checkpoint
    from optkit.quant.quantizers import insert_quantizers, quantizable_layers
    from optkit.tasks import get_task

    ckpt = load_checkpoint(src)
    task = get_task(ckpt.task)
    spec = task.resolve_data(data, splits=("train",))
    dataset = task.image_dataset(spec, ckpt.names, ckpt.imgsz, "train")
    batches = list(image_batches(dataset, evenly_spaced(len(dataset), images), 32))
    fused, fuse_entry = fused_for_quantization(build_model(ckpt), ckpt.imgsz)
    skip = [name for name in quantizable_layers(fused) if name.endswith("dfl.conv")]
    config = QuantConfig(method="max", skip=skip)
    qmodel = insert_quantizers(copy.deepcopy(fused), config)
    calibrate_on(qmodel, config, batches)
    ranges = onnx_ranges_of(qmodel, ckpt.imgsz, batches, tuple(task.output_names))
    new = quantized_checkpoint(ckpt, qmodel, config, ranges, fuse_entry)
    new.add_lineage("ptq-calibrate", {"num_images": images, "method": "max"}, {})
    return save_checkpoint(new, out)


def qat(int8: Path, data: str, options: dict | None, args, project: Path) -> dict:
    from optkit.quant.config import QAT_LR0, QAT_WARMUP
    from optkit.workflows.qat import QatRequest, run_qat

    # `optkit qat`'s own defaults (AdamW, lr0 1e-4, no warm-up), shorter
    train = {"data": data, "epochs": args.epochs, "batch_size": args.batch_size, "fraction": args.fraction,
             "workers": args.workers, "seed": 0, "project": str(project), "cache": True, "optimizer": "AdamW",
             "lr0": args.lr0 or QAT_LR0, "warmup_epochs": QAT_WARMUP}  # fmt: skip
    r = run_qat(QatRequest(str(int8), train, distill=options is not None, distill_options=options or {},
                           num_images=32))  # fmt: skip
    keys = ("float_map", "float_map50", "ptq_map", "ptq_map50", "qat_map", "qat_map50", "best_epoch")
    return {**{k: r[k] for k in keys}, "distill_loss": r["distill_loss"], "options": options}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", default="builtin:shapes-det")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--lr0", type=float, default=None, help="default: optkit qat's")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("results/detect_qat_distill.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="qat-distill-"))
    int8 = quantize(args.weights, args.data, folder / "int8.pt", args.calibration_images)
    rows = {}
    for name in args.variants.split(","):
        rows[name] = qat(int8, args.data, VARIANTS[name], args, folder / name)
        print(name, json.dumps(rows[name]), flush=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "variants": rows}, indent=2) + "\n")
    print(
        f"{'variant':<15} {'mAP50-95':>9} {'mAP50':>7}  (float {rows[name]['float_map']:.4f} / "
        f"{rows[name]['float_map50']:.4f}, PTQ {rows[name]['ptq_map']:.4f} / {rows[name]['ptq_map50']:.4f})"
    )
    for name, row in rows.items():
        print(f"{name:<15} {row['qat_map']:>9.4f} {row['qat_map50']:>7.4f}")


if __name__ == "__main__":
    main()
