"""A task registered here alone, in the test suite, runs through train -> val -> export: a new task needs
no edit in the flows (docs/architecture.md, "The task seam").

The fake task regresses the mean colour of an image (3 outputs) from the tiny colour folders: its data,
loss, metric and output names are all its own, and none of them is a classifier's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from optkit.models import list_models, register_model
from optkit.models.parts import HeadedSequential
from optkit.tasks import Metric, Task, get_task, register_task

TASK = "fake-mean-colour"
MODEL = "test-fake-mean-colour"


@dataclass
class ColourData:
    root: Path
    names: list[str]  # the outputs: one per colour channel
    train_dir: Path
    val_dir: Path


class MeanColour:
    """An image dataset whose target is the mean of the (normalised) image per channel."""

    def __init__(self, images) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        x, _ = self.images[key]
        return x, x.mean(dim=(1, 2))


class FakeMeanColour(Task):
    name = TASK
    metrics = (Metric("closeness", "closeness"),)
    fitness_key = "closeness"
    output_names = ("mean_rgb",)

    def resolve_data(self, spec, log=None, skip_bad_labels=False, splits=("train", "val")):
        root = Path(spec)
        return ColourData(root, ["r", "g", "b"], root / "train", root / "val")

    def train_loader(self, data, names, imgsz, batch, workers, seed, fraction=1.0, rank=0, world=1,
                     cache=False, options=None):  # fmt: skip
        from optkit.data import ImageFolder, TrainTransform, build_train_loader

        images = ImageFolder(data.train_dir, TrainTransform(imgsz))
        return build_train_loader(MeanColour(images), batch, workers, seed, fraction, rank, world)

    def image_dataset(self, data, names, imgsz, split, preprocess=None):
        from optkit.data import ImageFolder, ValTransform

        folder = data.val_dir if split == "val" else data.train_dir
        return MeanColour(ImageFolder(folder, ValTransform(imgsz)))

    def val_loader(self, data, names, imgsz, batch, workers, preprocess=None):
        from optkit.data import build_val_loader

        return build_val_loader(self.image_dataset(data, names, imgsz, "val"), batch, workers)

    def loss(self, options, model=None):
        return nn.MSELoss()

    def evaluate(self, model, loader, device, amp=False) -> dict:
        was_training = model.training
        model.eval()
        abs_err = sq_err = n = 0.0
        with torch.inference_mode():
            for x, y in loader:
                out = self.read_outputs(model(x.to(device)), 3).float().cpu()
                abs_err += (out - y).abs().mean(1).sum().item()
                sq_err += (out - y).pow(2).mean(1).sum().item()
                n += len(y)
        model.train(was_training)
        return {"closeness": 1 / (1 + abs_err / n), "loss": sq_err / n, "images": int(n)}


class ColourHead(nn.Module):
    output_layers = ("linear",)

    def __init__(self, c1: int, outputs: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c1, outputs)

    def forward(self, x):
        return self.linear(self.pool(x).flatten(1))


class ColourNet(HeadedSequential):
    stride = 32

    def __init__(self, outputs: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(3 if i == 0 else 8, 8, 3, 2, 1) for i in range(5)]  # /32
        self.model = nn.Sequential(*[m for c in convs for m in (c, nn.BatchNorm2d(8), nn.ReLU())],
                                   ColourHead(8, outputs))  # fmt: skip


if MODEL not in list_models(include_test=True):  # once per process (pytest imports this module once)
    register_task(FakeMeanColour())
    register_model(MODEL, default_imgsz=32, description="mean-colour regressor", is_test=True, task=TASK)(
        lambda num_classes=3: ColourNet(num_classes)
    )


@pytest.mark.slow
def test_a_task_registered_in_the_tests_trains_validates_and_exports(cli, tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = ["--epochs", "3", "--imgsz", "32", "--batch-size", "16", "--workers", "0", "--lr0", "0.01"]
    trained = cli("train", "--model", MODEL, "--data", tiny_data, *quick, "--json")
    assert trained.code == 0, trained.err
    run = trained.json()
    assert run["task"] == TASK and 0 < run["best_closeness"] <= 1 and "closeness" in run["final"]
    assert "top1" not in run["final"]
    best = tmp_path / run["best"]

    from optkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(best)
    assert ckpt.task == TASK and ckpt.names == ["r", "g", "b"] and set(ckpt.metrics) == {"closeness", "loss"}

    val = cli("val", best, "--data", tiny_data, "--workers", "0", "--json")
    assert val.code == 0, val.err
    assert val.json()["closeness"] == pytest.approx(ckpt.metrics["closeness"], abs=1e-6)  # same weights

    exported = cli("export", best, "-o", tmp_path / "colour.onnx", "--json")
    assert exported.code == 0, exported.err
    import onnx

    graph = onnx.load(str(tmp_path / "colour.onnx")).graph
    assert [o.name for o in graph.output] == ["mean_rgb"]


def test_the_fake_task_is_found_by_name():
    assert isinstance(get_task(TASK), FakeMeanColour)
