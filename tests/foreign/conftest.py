"""Fixtures for the foreign-checkpoint tests (builders live in foreign_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from foreign_helpers import IMGSZ, NAMES, classifier, detector, purge_family, ultralytics_file, write_family


@pytest.fixture
def code_dir(tmp_path) -> Path:
    """The yolo_like family's source in tmp_path/code; not on sys.path, not imported when the test starts."""
    purge_family()
    yield write_family(tmp_path / "code")
    purge_family()


@pytest.fixture
def best(tmp_path, code_dir):
    return ultralytics_file(detector(code_dir), tmp_path / "best.pt", "best")


@pytest.fixture
def trained_classifier(tmp_path, code_dir, tiny_data):
    """A yolo_like classifier trained briefly on tiny_data (inputs scaled to [0, 1], as its pickled
    Normalize(0, 1) says), saved as a stripped Ultralytics classify file."""
    from optkit.data import ImageFolder, ValTransform

    model = classifier(code_dir).train()
    data = ImageFolder(tiny_data / "train", ValTransform(IMGSZ, mean=(0, 0, 0), std=(1, 1, 1)), classes=NAMES)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randperm(len(y), generator=g)[:32]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ultralytics_file(model.eval(), tmp_path / "cls.pt", "stripped", task="classify")
