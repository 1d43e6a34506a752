"""Export of models that are not optkit checkpoints (a trusted foreign module, a TorchScript file):
the same ONNX file, checks and metadata as `optkit export` of a checkpoint, with the facts taken from
the file (class names, stride, input size, the preprocessing of its pickled transforms)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from optkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from optkit.stages.export import ExportConfig, ExportReport
    from optkit.workflows.inputs import ModelInput


def export_input(
    src: ModelInput,
    output: str | os.PathLike,
    config: ExportConfig,
    source: str | os.PathLike | None = None,
    images: Iterable[torch.Tensor] | None = None,
) -> ExportReport:
    """Export `src.model()` (fp32, eval) with metadata names / imgsz / stride / task / arch / preprocess."""
    from optkit import __version__
    from optkit.data import IMAGENET_MEAN, IMAGENET_STD
    from optkit.stages.export import export_onnx, half_device, sha256_file

    config = replace(config, imgsz=config.imgsz or src.imgsz)
    config.validate()
    if getattr(config, "int8_target", None):
        raise ConfigError(
            f"--int8-target needs a quantized optkit checkpoint; {src.path} is a {src.kind} file"
        )
    if config.half:
        half_device()  # a clear error before the model is loaded
    metadata = {
        "names": list(src.names),
        "imgsz": int(config.imgsz),
        "stride": src.stride,
        "task": src.task,
        "arch": src.arch,
        "optkit_version": __version__,
        "preprocess": src.preprocess or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "source_format": src.kind,
    }
    if source is not None:
        metadata["source_sha256"] = sha256_file(source)
    return export_onnx(src.model(), output, config, metadata, images)
