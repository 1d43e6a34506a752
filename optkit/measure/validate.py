"""Validate a checkpoint file on a dataset: the library side of `optkit val`."""

from __future__ import annotations

import time
from pathlib import Path

from optkit.errors import ConfigError, DatasetError


def validate_checkpoint(
    weights: str | Path,
    data: str,
    imgsz: int | None = None,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "",
) -> dict:
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.data import resolve_data
    from optkit.models.imgsz import check_imgsz

    if not 1 <= batch_size <= 65536:
        raise ConfigError(f"--batch-size must be in [1, 65536], got {batch_size}")
    if Path(weights).suffix.lower() == ".onnx":
        return validate_onnx(weights, data, imgsz, batch_size, workers, device)
    ckpt = load_checkpoint(weights)
    imgsz = check_imgsz(imgsz or ckpt.imgsz)
    spec = resolve_data(data)
    check_classes(spec, ckpt.names)
    result = accuracy_on(build_model(ckpt), ckpt.names, spec, imgsz, batch_size, workers, device)
    return {"weights": str(weights), "data": data, **result}


def validate_onnx(
    path: str | Path,
    data: str,
    imgsz: int | None = None,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "",
) -> dict:
    """Accuracy of an .onnx exported by optkit, run by ONNX Runtime on the CPU; class names and input
    size come from the file's metadata."""
    from optkit.data import resolve_data
    from optkit.errors import DeviceError
    from optkit.models.imgsz import check_imgsz
    from optkit.onnxrt import load_optkit_onnx

    if device.strip().lower() not in ("", "auto", "cpu"):
        raise DeviceError(f"{path} runs on ONNX Runtime's CPU provider; drop --device {device} or use cpu")
    model, meta = load_optkit_onnx(path)
    size = imgsz or meta.get("imgsz") or (model.fixed_size() or (None,))[0]
    if not isinstance(size, int):
        raise ConfigError(f"{path} records no input size in its metadata; give --imgsz")
    size = check_imgsz(size, meta["stride"] if isinstance(meta.get("stride"), int) else 32)
    model.check_input_size(size)
    spec = resolve_data(data)
    check_classes(spec, meta["names"], "ONNX model")
    result = accuracy_on(model, meta["names"], spec, size, batch_size, workers, "cpu")
    return {"weights": str(path), "data": data, "runtime": "onnxruntime", **result}


def accuracy_on(
    model,
    names: list[str],
    spec,
    imgsz: int,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "",
) -> dict:
    """top-1/top-5/loss of `model` on the val split of a resolved dataset (`resolve_data(...)`)."""
    from optkit.data import ImageFolder, ValTransform, build_val_loader, default_workers
    from optkit.device import select_device
    from optkit.measure.evaluate import evaluate

    dev = select_device(device)
    dataset = ImageFolder(spec.val_dir, ValTransform(imgsz), classes=list(names))
    loader = build_val_loader(dataset, batch_size, workers if workers is not None else default_workers())
    t0 = time.perf_counter()
    acc = evaluate(model.to(dev), loader, dev)
    seconds = time.perf_counter() - t0
    return {
        "split": "val",
        "imgsz": imgsz,
        "device": str(dev),
        **acc.as_dict(),
        "seconds": seconds,
        "images_per_s": acc.images / seconds if seconds else None,
    }


def check_classes(spec, names: list[str], what: str = "checkpoint") -> None:
    if list(spec.names) != list(names):
        raise DatasetError(
            f"dataset classes do not match the {what}'s: data has {len(spec.names)} "
            f"({_short(spec.names)}), {what} has {len(names)} ({_short(names)})"
        )


def _short(names: list[str], n: int = 4) -> str:
    head = ", ".join(names[:n])
    return head + (", ..." if len(names) > n else "")
