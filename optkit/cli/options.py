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
Imgsz = Annotated[int | None, typer.Option("--imgsz", help="Input size in pixels (multiple of 32).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="DataLoader worker processes (default: chosen for this machine)."),
]
Output = Annotated[
    str | None, typer.Option("--output", "-o", help="Output file (default: <stem>-<stage>.pt).")
]

# Model files optkit did not write (optkit.inputs.open_model)
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
