"""Helpers for the foreign-checkpoint tests: the `yolo_like` family written to a folder (importable only
through --code-dir), files saved in Ultralytics' and YOLOv5's layouts with fp16 weights, fp16 optimizer
state and the extra keys current Ultralytics files carry, and a YOLO-format dataset labelled by a
detector's own boxes (`write_det_data`)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import family_src
import numpy as np
import torch
import yaml
from PIL import Image

PACKAGE = "yolo_like"
NAMES = ["blue", "green", "red"]  # the classes of conftest's tiny_data
IMGSZ = 64
IMAGES = 6  # val images of write_det_data (one of them a background)
EXTRA_KEYS = {
    "date": "2025-01-01T00:00:00",
    "version": "8.3.40",
    "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    "docs": "https://docs.ultralytics.com",
    "git": {"root": "https://github.com/ultralytics/ultralytics", "branch": "main", "commit": "abc123"},
    "train_metrics": {"metrics/mAP50(B)": 0.25, "fitness": 0.3},
    "train_results": {"epoch": [1, 2], "metrics/mAP50(B)": [0.1, 0.25]},
    "modelopt": {"mode": "none"},
}


def purge_family() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def write_family(root: Path) -> Path:
    """The family's source under `root` (root/yolo_like/...); nothing is imported."""
    pkg = root / PACKAGE
    pkg.mkdir(parents=True)
    for name, text in (
        ("__init__", family_src.INIT),
        ("common", family_src.COMMON),
        ("yolo", family_src.YOLO),
        ("augment", family_src.AUGMENT),
        ("v8", family_src.V8),
    ):
        (pkg / f"{name}.py").write_text(text)
    return root


def family(code_dir: Path):
    """Import the family's modules (for building models in a test), leaving sys.path as it was."""
    sys.path.insert(0, str(code_dir))
    try:
        import yolo_like.augment as augment
        import yolo_like.yolo as yolo
    finally:
        sys.path.remove(str(code_dir))
    return yolo, augment


def family_v8(code_dir: Path):
    """The family's anchor-free module (yolo_like.v8), imported as `family` imports the others."""
    sys.path.insert(0, str(code_dir))
    try:
        import yolo_like.v8 as v8
    finally:
        sys.path.remove(str(code_dir))
    return v8


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so that folding them changes the weights."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def detector(code_dir: Path, seed: int = 0):
    yolo, _ = family(code_dir)
    torch.manual_seed(seed)
    model = yolo.DetectionModel(nc=3, w=8, names=dict(enumerate(NAMES)))
    _randomize_bn(model, seed)
    return model.eval()


def _spread_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """He-normal conv weights: the signal keeps its scale through the layers, so the scores differ from
    anchor to anchor and image to image (default init leaves them equal to ~1e-6: ties everywhere)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))


def v8_detector(code_dir: Path, seed: int = 0):
    """The anchor-free detector whose eval output is Ultralytics 8.4's (y, {"boxes", "scores", "feats"}),
    with varied scores; its box bins favour short distances, as a trained head's do, so that boxes fit
    in a 64 px image."""
    v8 = family_v8(code_dir)
    torch.manual_seed(seed)
    model = v8.DetectionModel(nc=3, w=8, names=dict(enumerate(NAMES)))
    _randomize_bn(model, seed)
    _spread_weights(model, seed)
    head = model.model[-1]
    bins = torch.arange(head.reg_max, dtype=torch.float32)
    for branch in head.box:
        branch[-1].bias.data.copy_((-0.7 * bins).repeat(4))  # expected distance ~1 cell per side
    return model.eval()


def yolov5_detector(code_dir: Path, seed: int = 0):
    """`detector` (YOLOv5's head: (y [B, N, 5 + nc], [3 maps])) with varied scores and list names."""
    model = detector(code_dir, seed)
    model.names = list(NAMES)  # YOLOv5 keeps a list
    _spread_weights(model, seed)
    return model.eval()


def yolov5_file(model, path: Path) -> Path:
    """A YOLOv5 train.py checkpoint: model and ema in fp16, optimizer state, `opt` (its arguments), git,
    date; no train_args (the task is told by the head)."""
    ckpt = {
        "epoch": 9,
        "best_fitness": 0.2,
        "model": copy.deepcopy(model).half(),
        "ema": copy.deepcopy(model).half(),
        "updates": 90,
        "optimizer": fp16_optimizer_state(model),
        "opt": {"imgsz": IMGSZ, "epochs": 10, "batch_size": 16, "weights": "yolov5n.pt"},
        "git": {"url": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "abc123"},
        "date": "2025-01-01T00:00:00",
    }
    torch.save(ckpt, path)
    purge_family()
    return path


def classifier(code_dir: Path, seed: int = 0):
    yolo, augment = family(code_dir)
    torch.manual_seed(seed)
    transforms = augment.Compose(
        [augment.CenterCrop(IMGSZ), augment.Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]
    )
    model = yolo.ClassificationModel(nc=3, w=8, names=dict(enumerate(NAMES)), transforms=transforms)
    _randomize_bn(model, seed)
    return model.eval()


def fp16_optimizer_state(model: torch.nn.Module) -> dict:
    """Ultralytics' optimizer: 3 groups (weights with decay, norm weights, biases), fp16 momentum buffers."""
    work = copy.deepcopy(model).float().train()
    norm, bias, weights = [], [], []
    for m in work.modules():
        for name, p in m.named_parameters(recurse=False):
            (bias if name == "bias" else norm if isinstance(m, torch.nn.BatchNorm2d) else weights).append(p)
    opt = torch.optim.SGD(
        [{"params": norm, "weight_decay": 0.0}, {"params": weights, "weight_decay": 5e-4}, {"params": bias}],
        lr=0.01,
        momentum=0.9,
        nesterov=True,
    )
    out = work(torch.randn(2, 3, IMGSZ, IMGSZ))
    loss = sum(t.float().square().mean() for t in (out if isinstance(out, list) else [out]))
    loss.backward()
    opt.step()
    state = opt.state_dict()
    for s in state["state"].values():
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                s[k] = v.half()
    return state


def ultralytics_file(model, path: Path, kind: str, task: str = "detect", extra: dict | None = None) -> Path:
    """kind: "best" (model + ema, training state), "last" (mid-training: model None, module in ema),
    "stripped" (what a finished run leaves: epoch -1, model = former EMA, the rest None). `extra`: keys
    that replace EXTRA_KEYS' (e.g. another "version")."""
    ema = copy.deepcopy(model).half()
    train_args = {"task": task, "imgsz": IMGSZ, "epochs": 10, "batch": 16, "model": "yolo_like.yaml"}
    ckpt = {
        **copy.deepcopy(EXTRA_KEYS),
        **(extra or {}),
        "epoch": 4,
        "best_fitness": 0.3,
        "model": None if kind == "last" else copy.deepcopy(model).half(),
        "ema": ema,
        "updates": 120,
        "optimizer": fp16_optimizer_state(model),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "stopper": {"best_fitness": 0.3, "best_epoch": 3, "patience": 100},
        "train_args": train_args,
    }
    if kind == "stripped":
        ckpt.update(model=ema, ema=None, optimizer=None, best_fitness=None, updates=None, scaler=None)
        ckpt.update(stopper=None, epoch=-1)
    torch.save(ckpt, path)
    purge_family()  # loading must import the family again, through --code-dir
    return path


# --- a YOLO-format dataset labelled by a detector's own boxes ----------------------------------------


def _random_images(root, count: int = IMAGES, seed: int = 0) -> list:
    """64 x 64 PNGs (lossless: the model sees exactly these pixels) of noise and a few solid blocks."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (IMGSZ, IMGSZ, 3), dtype=np.uint8)
        for _ in range(3):
            x, y, w, h = rng.integers(0, IMGSZ - 8, 4)
            pixels[y : y + h // 2 + 4, x : x + w // 2 + 4] = rng.integers(0, 256, 3)
        path = root / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def write_det_data(root, model) -> tuple:
    """A YOLO data.yaml whose val labels are some of `model`'s own boxes (every other one shifted by
    3 px, one image left background): a val mAP between 0 and 1 that a wrong reading of the model's
    output would not reproduce. Returns (data.yaml, images folder)."""
    from optkit.measure.detect_eval import detector_output
    from optkit.measure.nms import non_max_suppression

    images = _random_images(root / "images" / "val")
    labels = root / "labels" / "val"
    labels.mkdir(parents=True)
    batch = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in images])
    with torch.no_grad():
        y = detector_output(model.float().eval()(batch.float() / 255), len(NAMES))
    for i, (path, det) in enumerate(zip(images, non_max_suppression(y, conf=0.05), strict=True)):
        rows = [] if i == len(images) - 1 else _label_rows(det)
        (labels / f"{path.stem}.txt").write_text("".join(rows))
    assert sum(len((labels / f"{p.stem}.txt").read_text().splitlines()) for p in images) >= 6
    config = {"path": str(root), "train": "images/val", "val": "images/val", "names": list(NAMES)}
    (root / "data.yaml").write_text(yaml.safe_dump(config))
    return root / "data.yaml", root / "images" / "val"


def _label_rows(det: torch.Tensor, keep: int = 4) -> list[str]:
    """YOLO label rows (class cx cy w h, normalised) of the first `keep` boxes that lie wholly inside
    the image, every other one shifted 3 px right (kept inside)."""
    inside = det[(det[:, :2] >= 0).all(1) & (det[:, 2:4] <= IMGSZ).all(1)][:keep]  # whole boxes only
    rows = []
    for j, (x1, y1, x2, y2, _, cls) in enumerate(inside.tolist()):
        shift = 3.0 * (j % 2)  # pixels
        cx, cy = min((x1 + x2) / 2 + shift, IMGSZ - 1), (y1 + y2) / 2
        w, h = min(x2 - x1, 2 * min(cx, IMGSZ - cx)), y2 - y1
        rows.append(f"{int(cls)} {cx / IMGSZ:.6f} {cy / IMGSZ:.6f} {w / IMGSZ:.6f} {h / IMGSZ:.6f}\n")
    return rows
