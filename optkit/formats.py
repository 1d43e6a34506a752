"""What a model file is, told by its first bytes, not its name (a name can lie: a checkpoint renamed
.onnx is still a checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

# What a model file is, read from its first bytes (a name can lie: a checkpoint renamed .onnx)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save since torch 1.6, and TorchScript: a zip archive
PICKLE_PROTO = 0x80  # legacy torch.save: a pickle stream, opening with PROTO and the protocol (2-5)
ONNX_IR_VERSION_TAG = 0x08  # an ONNX ModelProto opens with field 1, ir_version (a varint), as onnx writes it
TORCH_SUFFIXES = (".pt", ".pth", ".torchscript")


def model_format(path: str | os.PathLike) -> str | None:
    """The kind of model file at `path`, "torch" or "onnx", by its content; by its suffix only where
    the content tells neither (missing, empty, unreadable or other bytes); None when neither tells."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:  # missing, a folder, no permission: the suffix is all there is
        head = b""
    if head.startswith(ZIP_MAGIC) or (len(head) > 1 and head[0] == PICKLE_PROTO and 2 <= head[1] <= 5):
        return "torch"
    if len(head) > 1 and head[0] == ONNX_IR_VERSION_TAG and 0 < head[1] < 0x80:  # one-byte version
        return "onnx"
    suffix = path.suffix.lower()
    return "onnx" if suffix == ".onnx" else "torch" if suffix in TORCH_SUFFIXES else None
