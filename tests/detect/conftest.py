"""Detection through the flows: a tiny YOLO dataset, a 2-epoch `test-det` run on it, and a detector that
has learned its val images (made once per session; tests read them and never change them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from yolo_folders import NAMES, write_yolo_dataset

IMGSZ = 64  # pixels: test-det's own size
LEARN_STEPS = 180  # AdamW steps on the 6 val images (seed 0): mAP50 1.0, mAP50-95 0.80 at this lr
LEARN_LR = 0.03


def det_train_config(project: Path, data: Path, **overrides):
    """2 epochs of test-det at 64 px, batch 8, no workers, no warm-up, seed 3, in project/<name>."""
    from optkit.train.config import TrainConfig

    base = dict(
        model="test-det",
        data=str(data),
        epochs=2,
        imgsz=IMGSZ,
        batch_size=8,
        workers=0,
        project=str(project),
        name="exp",
        warmup_epochs=0.0,
        seed=3,
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture
def wide_console(monkeypatch):
    """Whole lines and table rows in captured output (pytest-xdist workers export COLUMNS=80, which
    optkit's console obeys, and long paths would wrap)."""
    from optkit.report import console

    monkeypatch.delenv("COLUMNS", raising=False)
    console.out.cache_clear()
    yield
    console.out.cache_clear()


@pytest.fixture(scope="session")
def det_data(tmp_path_factory) -> Path:
    """The data.yaml of a tiny detection set: 16 train and 6 val images of 80 x 60 px, classes rect and
    ellipse (tests/yolo_folders.py)."""
    return write_yolo_dataset(tmp_path_factory.mktemp("det-data") / "shapes", n_train=16, n_val=6)


@pytest.fixture(scope="session")
def det_config():
    return det_train_config


@pytest.fixture(scope="session")
def det_run(tmp_path_factory, det_data):
    """A finished 2-epoch training run (the Trainer's result): its best.pt, last.pt and run folder."""
    from optkit.train.trainer import Trainer

    return Trainer(det_train_config(tmp_path_factory.mktemp("det-runs"), det_data, name="straight")).run()


@pytest.fixture(scope="session")
def learned_det(tmp_path_factory, det_data) -> Path:
    """A test-det checkpoint that finds the objects of the val images (it was fitted to them), so that
    its mAP, recall and boxes are figures worth comparing (a 2-epoch run detects nothing yet)."""
    import torch

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model
    from optkit.tasks import get_task

    task = get_task("detect")
    data = task.resolve_data(str(det_data), log=lambda line: None, splits=("val",))
    dataset = task.image_dataset(data, NAMES, IMGSZ, "val")
    images, targets = task.collate([dataset[i] for i in range(len(dataset))])  # the val split, one batch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic, so the same fit, under pytest-xdist or not
    try:
        torch.manual_seed(0)
        model = create_model("test-det", num_classes=len(NAMES)).train()
        loss = task.loss({}, model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARN_LR)
        for _ in range(LEARN_STEPS):
            total, _ = loss(model(images), targets)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    metrics = task.evaluate(model, [(images, targets)], torch.device("cpu"))
    assert metrics["map50"] > 0.5, metrics  # the fixture is useless (and learning broken) otherwise
    ckpt = checkpoint_from_model(model.eval(), NAMES, IMGSZ, task="detect", preprocess=dict(task.preprocess))
    ckpt.metrics = {m.key: metrics[m.key] for m in task.metrics}
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("det-learned") / "learned.pt")


@pytest.fixture(scope="session")
def int8_det(tmp_path_factory, det_data, learned_det) -> Path:
    """learned_det quantized as ptq-calibrate does (fused, ModelOpt quantizers calibrated with max on the
    train images, the onnxruntime ranges measured), saved as an optkit checkpoint."""
    from optkit.checkpoint import build_model, load_checkpoint, save_checkpoint
    from optkit.quant.config import QuantConfig
    from optkit.quant.ptq import calibrate_on, fused_for_quantization, onnx_ranges_of, quantized_checkpoint
    from optkit.quant.quantizers import insert_quantizers
    from optkit.tasks import get_task

    task = get_task("detect")
    data = task.resolve_data(str(det_data), log=lambda line: None, splits=("train",))
    dataset = task.image_dataset(data, NAMES, IMGSZ, "train")
    images, _ = task.collate([dataset[i] for i in range(len(dataset))])
    calib = list(images.float().split(8))
    ckpt = load_checkpoint(learned_det)
    fused, fuse_entry = fused_for_quantization(build_model(ckpt).eval(), IMGSZ)
    config = QuantConfig(method="max")
    qmodel = insert_quantizers(fused, config)
    calibrate_on(qmodel, config, calib)
    ranges = onnx_ranges_of(qmodel, IMGSZ, calib, task.output_names)
    new = quantized_checkpoint(ckpt, qmodel, config, ranges, fuse_entry)
    return save_checkpoint(new, tmp_path_factory.mktemp("det-int8") / "det-int8.pt")
