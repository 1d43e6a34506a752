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
    trust: bool = False,
    code_dir: str | None = None,
    model_name: str | None = None,
) -> dict:
    """Accuracy of a model file: an optkit checkpoint, a trusted foreign classifier, a state_dict with
    `model_name`, or an .onnx from optkit export."""
    from optkit.data import resolve_data
    from optkit.formats import model_format
    from optkit.models.imgsz import check_imgsz
    from optkit.workflows.inputs import open_model

    if not 1 <= batch_size <= 65536:
        raise ConfigError(f"--batch-size must be in [1, 65536], got {batch_size}")
    if model_format(weights) == "onnx":  # by content: a checkpoint renamed .onnx is still one
        return validate_onnx(weights, data, imgsz, batch_size, workers, device)
    src = open_model(weights, command="val", trust=trust, code_dir=code_dir, model_name=model_name)
    require_classifier(src)
    imgsz = check_imgsz(imgsz or src.imgsz, src.stride)
    spec = resolve_data(data)
    names = src.names
    if src.kind == "state_dict" and len(spec.names) == len(names):
        names = list(spec.names)  # a state_dict records no class names: take the dataset's, in its order
    check_classes(spec, names)
    result = accuracy_on(src.model(), names, spec, imgsz, batch_size, workers, device, src.preprocess)
    return {"weights": str(weights), "data": data, **result}


def require_classifier(src, what: str = "val") -> None:
    """val measures classification accuracy: refuse a detection (or other) model in one line."""
    if src.task != "classify":
        raise ConfigError(
            f"{what} measures classification accuracy (top-1/top-5) and needs a classification model; "
            f"{src.path} is a {src.task} model ({src.arch})"
        )


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
    pre = meta.get("preprocess") if isinstance(meta.get("preprocess"), dict) else None
    result = accuracy_on(model, meta["names"], spec, size, batch_size, workers, "cpu", pre)
    return {"weights": str(path), "data": data, "runtime": "onnxruntime", **result}


def accuracy_on(
    model,
    names: list[str],
    spec,
    imgsz: int,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "",
    preprocess: dict | None = None,
) -> dict:
    """top-1/top-5/loss of `model` on the val split of a resolved dataset (`resolve_data(...)`).

    preprocess: {"mean", "std"} the model expects (e.g. read from a foreign model's transforms); None:
    optkit's ImageNet normalisation. A model whose output is not plain logits (probabilities, or a tuple
    holding the class scores) is read through `class_logits`."""
    from optkit.data import ImageFolder, ValTransform, build_val_loader, default_workers
    from optkit.data.loader import require_two_classes
    from optkit.device import select_device
    from optkit.measure.evaluate import evaluate

    require_two_classes(list(names), spec.root)  # one class: top-1 is 100% whatever the model does
    dev = select_device(device)
    norm = {"mean": preprocess["mean"], "std": preprocess["std"]} if preprocess else {}
    dataset = ImageFolder(spec.val_dir, ValTransform(imgsz, **norm), classes=list(names))
    loader = build_val_loader(dataset, batch_size, workers if workers is not None else default_workers())
    t0 = time.perf_counter()
    acc = evaluate(_LogitsOf(model, len(names)).to(dev), loader, dev)
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


class _LogitsOf:
    """Calls `model` and returns (N, classes) logits from what it outputs (see `class_logits`)."""

    def __init__(self, model, num_classes: int) -> None:
        self.model, self.num_classes = model, num_classes

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        self.model = self.model.to(*args, **kwargs)
        return self

    def __call__(self, x):
        return class_logits(self.model(x), self.num_classes)


def class_logits(output, num_classes: int):
    """Logits from a classifier's output: a (N, C) tensor, or the (N, C) tensor in a tuple/list (the
    un-normalised one when there are several, as Ultralytics returns (probabilities, logits)). Rows of
    probabilities (Ultralytics' eval-mode softmax) become log-probabilities: same ranking, and
    cross-entropy on them is the true loss."""
    import torch

    items = list(output) if isinstance(output, (tuple, list)) else [output]
    scores = [t for t in items if isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape[1] == num_classes]
    if not scores:
        shapes = [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in items]
        raise ConfigError(
            f"the model's output {shapes} holds no (N, {num_classes}) class scores; val needs a classifier"
        )
    plain = [t for t in scores if not _probabilities(t)]
    if plain:
        return plain[-1]
    return scores[0].float().clamp_min(1e-30).log()


def _probabilities(t) -> bool:
    t = t.float()
    return bool(((t >= 0) & (t <= 1)).all()) and bool(((t.sum(1) - 1).abs() < 1e-3).all())
