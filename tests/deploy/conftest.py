"""Deploy's inputs: a tiny classifier fitted to its images, the same with an activation outlier that INT8
cannot survive, and the detection fixtures of tests/detect (a tiny YOLO set and a detector fitted to it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

NAMES = ["blue", "green", "red"]  # tests/conftest.py's tiny_data classes
IMGSZ = 32  # test-tiny's own size
FIT_STEPS = 40  # AdamW steps on the train images: top-1 1.0 on val (the val images are drawn alike)
FIT_LR = 0.01
OUTLIER = 1e4  # an activation this large makes a per-tensor INT8 step of ~80: every other value rounds to 0


def _detect_fixtures():
    """tests/detect/conftest.py as a module of its own name (a plain `import conftest` is ambiguous)."""
    path = Path(__file__).parents[1] / "detect" / "conftest.py"
    spec = importlib.util.spec_from_file_location("deploy_detect_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_det = _detect_fixtures()
det_data, learned_det = _det.det_data, _det.learned_det  # fixtures, shared with the detector test


@pytest.fixture(scope="session")
def cls_data(tmp_path_factory) -> Path:
    from image_folders import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("deploy-data") / "colors", NAMES, per_class=24)


def _fit(data: Path, folder: Path, pin=None) -> Path:
    """test-tiny fitted to the train images of `data` (one batch, AdamW), saved in `folder`; `pin(model)`
    is applied before training and after every step (parameters held fixed)."""
    import torch

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model
    from optkit.tasks import get_task

    task = get_task("classify")
    spec = task.resolve_data(str(data), log=lambda line: None, splits=("train",))
    dataset = task.image_dataset(spec, NAMES, IMGSZ, "train")
    images, labels = task.collate([dataset[i] for i in range(len(dataset))])
    pin = pin or (lambda model: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic, so the same fit, under pytest-xdist or not
    try:
        torch.manual_seed(0)
        model = create_model("test-tiny", num_classes=len(NAMES)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=FIT_LR)
        pin(model)
        for _ in range(FIT_STEPS):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pin(model)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() == 1.0  # else the fixture is useless
    return save_checkpoint(checkpoint_from_model(model, NAMES, IMGSZ), folder / "fit.pt")


@pytest.fixture(scope="session")
def learned_cls(tmp_path_factory, cls_data) -> Path:
    """An optkit checkpoint of test-tiny that classifies the colour images."""
    return _fit(cls_data, tmp_path_factory.mktemp("cls"))


def _outlier(model) -> None:
    """Channel 0 after the second conv a constant OUTLIER, read by the next block with zero weights."""
    import torch

    conv, block = model.model[1], model.model[2]  # Conv(8, 16) then C3(16, 16) (optkit.models.tiny)
    with torch.no_grad():
        conv.bn.weight[0] = 0.0
        conv.bn.bias[0] = OUTLIER  # SiLU(OUTLIER) = OUTLIER on every pixel of channel 0
        block.cv1.conv.weight[:, 0] = 0.0
        block.cv2.conv.weight[:, 0] = 0.0


@pytest.fixture(scope="session")
def int8_breaking_cls(tmp_path_factory, cls_data) -> Path:
    """A test-tiny fitted with one constant channel of OUTLIER after its second conv, which the next
    block reads with zero weights (held so while it trains): the float model classifies the images,
    while a per-tensor INT8 quantizer of that block's input, calibrated to the outlier, rounds every
    other activation there to 0."""
    return _fit(cls_data, tmp_path_factory.mktemp("cls-outlier"), pin=_outlier)
