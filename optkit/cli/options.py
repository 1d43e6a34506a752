"""Option types shared by every command (Typer `Annotated` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (logs go to stderr).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
Device = Annotated[str, typer.Option("--device", help="cpu, 0, cuda:0; empty = CUDA if available, else CPU.")]
Data = Annotated[
    str, typer.Option("--data", help="builtin:shapes or a folder with train/ and val/ class folders.")
]
ModelData = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Classifiers: builtin:shapes (default) or a folder with train/ and val/ class folders. "
        "Detectors: builtin:shapes-det (default) or a YOLO data.yaml.",
    ),
]
Conf = Annotated[
    float | None, typer.Option("--conf", help="Detectors: score threshold (val 0.001, predict 0.25).")
]
Iou = Annotated[float | None, typer.Option("--iou", help="Detectors: NMS IoU threshold (0.7).")]
MaxDet = Annotated[int | None, typer.Option("--max-det", help="Detectors: detections kept per image (300).")]
Imgsz = Annotated[int | None, typer.Option("--imgsz", help="Input size in pixels (multiple of 32).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="DataLoader worker processes (default: chosen for this machine)."),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads for torch (default: one per core; see optkit.threads)."),
]
Output = Annotated[
    str | None, typer.Option("--output", "-o", help="Output file (default: <stem>-<stage>.pt).")
]

# Model files optkit did not write (optkit.workflows.inputs.open_model)
Trust = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Load a foreign checkpoint that pickles its model (YOLOv5/Ultralytics best.pt); this runs "
        "code from the file, so only for files you trust.",
    ),
]
CodeDir = Annotated[
    str | None,
    typer.Option("--code-dir", help="With --trust: folder put on the import path (e.g. a YOLOv5 checkout)."),
]
ModelName = Annotated[
    str | None,
    typer.Option("--model", help="Load a plain state_dict file into this zoo model (see optkit models)."),
]

# The trainer's options, shared by `optkit train` and `optkit qat` (each command sets its own defaults)
Epochs = Annotated[int, typer.Option("--epochs", help="Total epochs.")]
Optimizer = Annotated[str, typer.Option("--optimizer", help="SGD, Adam, AdamW or RMSProp.")]
Lr0 = Annotated[float, typer.Option("--lr0", help="Initial learning rate.")]
Lrf = Annotated[float, typer.Option("--lrf", help="Final learning rate as a fraction of lr0.")]
Momentum = Annotated[float, typer.Option("--momentum", help="SGD momentum / Adam beta1.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay at a batch of 64.")]
WarmupEpochs = Annotated[float, typer.Option("--warmup-epochs", help="Warm-up length (>= 100 iterations).")]
LabelSmoothing = Annotated[float, typer.Option("--label-smoothing", help="Label smoothing.")]
Patience = Annotated[int, typer.Option("--patience", help="Stop after N epochs without improvement.")]
Freeze = Annotated[int, typer.Option("--freeze", help="Freeze the first N top-level blocks.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for order, augmentation and init.")]
Fraction = Annotated[float, typer.Option("--fraction", help="Train on this fraction of the train split.")]
Cache = Annotated[bool, typer.Option("--cache", help="Keep decoded training images in RAM.")]
SkipBadLabels = Annotated[
    bool,
    typer.Option(
        "--skip-bad-labels",
        help="Detectors: drop images whose label files have bad rows (and say how many) instead of stopping.",
    ),
]
Amp = Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")]
Project = Annotated[str, typer.Option("--project", help="Parent folder of runs.")]
Name = Annotated[str, typer.Option("--name", help="Run folder name (exp, exp2, ...).")]
ExistOk = Annotated[bool, typer.Option("--exist-ok", help="Reuse project/name if it exists.")]

Precision = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="OpenVINO IR: inference precision of float layers (f32, bf16, f16); default: the CPU's (bf16 "
        "where it has it).",
    ),
]
