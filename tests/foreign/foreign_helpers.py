"""Helpers for the foreign-checkpoint tests: the `yolo_like` family written to a folder (importable only
through --code-dir), and files saved in Ultralytics' layouts with fp16 weights, fp16 optimizer state and
the extra keys current Ultralytics files carry."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import family_src
import torch

PACKAGE = "yolo_like"
NAMES = ["blue", "green", "red"]  # the classes of conftest's tiny_data
IMGSZ = 64
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


def ultralytics_file(model, path: Path, kind: str, task: str = "detect") -> Path:
    """kind: "best" (model + ema, training state), "last" (mid-training: model None, module in ema),
    "stripped" (what a finished run leaves: epoch -1, model = former EMA, the rest None)."""
    ema = copy.deepcopy(model).half()
    train_args = {"task": task, "imgsz": IMGSZ, "epochs": 10, "batch": 16, "model": "yolo_like.yaml"}
    ckpt = {
        **copy.deepcopy(EXTRA_KEYS),
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
