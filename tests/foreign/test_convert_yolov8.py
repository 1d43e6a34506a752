"""`optkit convert` (issue 15, part 8): a trusted Ultralytics YOLOv8 detection checkpoint becomes an optkit
yolo-det checkpoint. The fixture (yolov8_src.py) has exactly YOLOv8's state_dict layout and computes on
its own (its DFL is the stored 1x1 conv, its anchors its own), so equal outputs prove the mapping; the
variants prove that what does not map is refused, naming the first layer that differs."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yolov8_src
from foreign_helpers import NAMES, _randomize_bn, _spread_weights, ultralytics_file, write_det_data
from PIL import Image

from optkit.checkpoint import build_model, load_checkpoint

TINY_N = (0.33, 1 / 16, 1024)  # the n scale's depth, 1/16 of the width: 8..64 channels
TINY_CAPPED = (0.67, 1 / 16, 256)  # the m scale's depth, channels capped (as m / l / x are): 8..16


def _purge() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == yolov8_src.PACKAGE]:
        del sys.modules[name]


@pytest.fixture
def v8_code(tmp_path) -> Path:
    """yolov8_like's source under tmp_path/v8code (importable only through --code-dir)."""
    _purge()
    root = tmp_path / "v8code"
    package = root / yolov8_src.PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(yolov8_src.INIT)
    (package / "nn.py").write_text(yolov8_src.NN)
    yield root
    _purge()


def yolov8(code: Path, scale=TINY_N, seed: int = 0, **variant):
    """A YOLOv8-layout detector for NAMES with varied outputs: BatchNorm statistics and He-normal conv
    weights drawn, box bins favouring short distances (boxes fit a 64 px image)."""
    sys.path.insert(0, str(code))
    try:
        import yolov8_like.nn as family
    finally:
        sys.path.remove(str(code))
    torch.manual_seed(seed)
    model = family.DetectionModel(len(NAMES), scale, dict(enumerate(NAMES)), **variant)
    _randomize_bn(model, seed)
    _spread_weights(model, seed)
    head = model.model[-1]
    head.dfl.conv.weight.data[:] = torch.arange(16.0).view(1, 16, 1, 1)  # fixed bins (He init touched them)
    bins = torch.arange(head.reg_max, dtype=torch.float32)
    for branch in head.cv2:
        branch[-1].bias.data.copy_((-0.7 * bins).repeat(4))  # expected distance ~1 cell per side
    return model.eval()


def v8_file(model, path: Path) -> Path:
    """An Ultralytics 8.4 best.pt of `model` (model and EMA in fp16, optimizer, train_args imgsz 64)."""
    out = ultralytics_file(model, path, "best", extra={"version": "8.4.0"})
    _purge()  # loading must import the family again, through --code-dir
    return out


def trusted(code: Path) -> tuple[str, ...]:
    return ("--trust", "--code-dir", str(code))


def _images(folder: Path) -> torch.Tensor:
    paths = sorted(folder.glob("*.png"))
    return (
        torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in paths]).float() / 255
    )


def _stored(model):
    """The module as the file stores it (fp16), in float32 for comparing."""
    return copy.deepcopy(model).half().float().eval()


# --- conversion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale, act, arch, kwargs",
    [
        (TINY_N, "silu", "yolo-det-n", {"width_multiple": 0.0625}),
        (
            TINY_CAPPED,
            "silu",
            "yolo-det-n",
            {"width_multiple": 0.0625, "depth_multiple": 0.67, "max_channels": 256},
        ),
        (TINY_N, "relu", "yolo-det-n", {"width_multiple": 0.0625, "act": "relu"}),
    ],
    ids=["n-depth", "capped-m-depth", "relu"],
)
def test_convert_gives_the_same_outputs_and_a_safe_file(cli, tmp_path, v8_code, scale, act, arch, kwargs):
    model = yolov8(v8_code, scale, act=act)
    best = v8_file(model, tmp_path / "best.pt")
    before = best.read_bytes()
    r = cli("convert", best, *trusted(v8_code), "-o", tmp_path / "safe.pt", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["check"]["max_rel"] <= 1e-4 and result["check"]["max_abs_scores"] <= 1e-4, result["check"]
    assert (result["arch"], result["options"], result["scale"]) == (arch, kwargs, None)
    assert result["from"] == "Ultralytics 8.4.0 DetectionModel" and result["weights"] == "EMA"
    assert "optimizer" in result["dropped"]
    assert best.read_bytes() == before  # the input is not touched

    raw = torch.load(tmp_path / "safe.pt", weights_only=True)  # tensors and plain data only
    assert raw["arch"] == {"name": arch, "kwargs": kwargs}
    assert (raw["names"], raw["imgsz"], raw["task"]) == (NAMES, 64, "detect")
    assert raw["preprocess"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert raw["optimizer"] is None and raw["ema"] is None
    assert raw["lineage"][-1]["stage"] == "convert" and raw["lineage"][-1]["args"]["source"] == str(best)

    converted = build_model(load_checkpoint(tmp_path / "safe.pt"))
    data_root = tmp_path / "images"
    write_det_data(data_root, _stored(model))
    x = _images(data_root / "images" / "val")
    with torch.no_grad():
        want = _stored(model)(x)[0]  # Ultralytics 8.4's eval output: (y, {...})
        got = converted(x)
    assert got.shape == want.shape == (len(x), 4 + len(NAMES), 8 * 8 + 4 * 4 + 2 * 2)
    scale_of_output = want.abs().max()
    assert (got - want).abs().max() <= 1e-4 * scale_of_output
    assert (got[:, 4:] - want[:, 4:]).abs().max() <= 1e-4  # the class scores on their own scale


def test_the_table_says_what_was_made(cli, tmp_path, v8_code, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths: table rows stay on one line
    v8_file(yolov8(v8_code), tmp_path / "best.pt")
    r = cli("convert", "best.pt", *trusted(v8_code))  # default output: beside the input
    assert r.code == 0, r.err
    assert (tmp_path / "best-optkit.pt").is_file()
    fragments = [
        "best-optkit.pt",
        "with weights_only=True: no --trust needed",
        "Ultralytics 8.4.0 DetectionModel, EMA weights",
        "yolo-det-n (width_multiple=0.0625): a scale of its own, act silu",
        "3 (blue, green, red)",
        "64 px, stride 32",
        "of the output scale",
    ]
    for fragment in fragments:
        assert fragment in r.out, r.out


def test_the_converted_file_runs_val_and_fine_tunes_without_trust(cli, tmp_path, v8_code, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = yolov8(v8_code)
    best = v8_file(model, tmp_path / "best.pt")
    data, _ = write_det_data(tmp_path / "det", _stored(model))
    assert cli("convert", best, *trusted(v8_code), "-o", tmp_path / "safe.pt").code == 0
    ours = cli("val", tmp_path / "safe.pt", "--data", data, "--workers", "0", "--json")
    theirs = cli("val", best, *trusted(v8_code), "--data", data, "--workers", "0", "--json")
    assert ours.code == 0 and theirs.code == 0, ours.err + theirs.err
    ours, theirs = json.loads(ours.out), json.loads(theirs.out)
    metrics = ("map", "map50", "precision", "recall")
    assert 0 < ours["map"] < ours["map50"] < 1, ours  # its own boxes, half of them shifted 3 px
    assert [ours[k] for k in metrics] == pytest.approx([theirs[k] for k in metrics], abs=1e-6)

    r = cli("train", "--weights", tmp_path / "safe.pt", "--data", data, "--epochs", "1", "--imgsz", "64",
            "--batch-size", "4", "--workers", "0", "--project", tmp_path / "runs")  # fmt: skip
    assert r.code == 0, r.err
    tuned = torch.load(next((tmp_path / "runs").rglob("best.pt")), weights_only=True)
    assert tuned["arch"]["name"] == "yolo-det-n" and tuned["names"] == NAMES


# --- the scale, read from the tensors -----------------------------------------------------------


@pytest.mark.parametrize(
    "scale, arch, options",
    [
        ("n", "yolo-det-n", {}),
        ("s", "yolo-det-s", {}),
        ("m", "yolo-det-n", {"depth_multiple": 0.67, "width_multiple": 0.75, "max_channels": 768}),
        ("l", "yolo-det-n", {"depth_multiple": 1.0, "width_multiple": 1.0, "max_channels": 512}),
        ("x", "yolo-det-n", {"depth_multiple": 1.0, "width_multiple": 1.25, "max_channels": 512}),
    ],
)
def test_published_scales_are_read_from_the_shapes(v8_code, scale, arch, options):
    """Shapes only (the modules are built on the meta device: no memory, no time)."""
    from optkit.foreign.convert_yolov8 import SCALES, read_scale
    from optkit.models import create_model

    sys.path.insert(0, str(v8_code))
    try:
        import yolov8_like.nn as family
    finally:
        sys.path.remove(str(v8_code))
    with torch.device("meta"):
        state = family.DetectionModel(80, SCALES[scale]).state_dict()
        found = read_scale(state)
        ours = create_model(found.arch, num_classes=found.num_classes, **found.options).state_dict()
    assert (found.scale, found.arch, found.options, found.num_classes) == (scale, arch, options, 80)
    renamed = [(k.replace("cv2.", "box.", 1) if k.startswith("model.22.cv2") else k) for k in state]
    renamed = [(k.replace("cv3.", "cls.", 1) if k.startswith("model.22.cv3") else k) for k in renamed]
    assert renamed[:-1] == list(ours) and renamed[-1] == "model.22.dfl.conv.weight"


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, fragment",
    [
        ({"block2": "C3"}, "layer model.2 (C3) differs from YOLOv8's: the file has model.2.cv1.conv.weight"),
        (
            {"cls_width": 24},
            "layer model.22 (Detect) differs from YOLOv8's: the file has model.22.cv3.0.0.conv",
        ),
        ({"strides": (8, 16, 64)}, "layer model.22 (Detect) has strides 8, 16, 64"),
        ({"neck_shortcut": True}, "layer model.12 (C2f) differs from YOLOv8's: model.12.m.0 adds its input"),
    ],
    ids=["yolov5u-block", "custom-head", "strides", "neck-shortcut"],
)
def test_a_structure_that_does_not_map_is_refused_naming_the_layer(cli, tmp_path, v8_code, variant, fragment):
    best = v8_file(yolov8(v8_code, **variant), tmp_path / "best.pt")
    r = cli("convert", best, *trusted(v8_code), "-o", tmp_path / "safe.pt")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert f"{best} is not a YOLOv8 detector optkit can convert: {fragment}" in lines[0], lines[0]
    assert "Traceback" not in r.err and not (tmp_path / "safe.pt").exists()


def test_other_files_are_refused_in_one_line(cli, tmp_path, v8_code, code_dir):
    from foreign_helpers import classifier, v8_detector

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    best = v8_file(yolov8(v8_code), tmp_path / "best.pt")
    own = checkpoint_from_model(create_model("test-det", num_classes=3), NAMES, 64, task="detect")
    own = save_checkpoint(own, tmp_path / "own.pt")
    other = ultralytics_file(v8_detector(code_dir), tmp_path / "other.pt", "best")  # C3 blocks, a small head
    cls = ultralytics_file(classifier(code_dir), tmp_path / "cls.pt", "stripped", task="classify")
    cases = [
        ((best,), "pickled Python objects"),  # no --trust: refused before unpickling
        ((own, "--trust"), "is already an optkit checkpoint (test-det); there is nothing to convert"),
        ((other, *trusted(code_dir)), "layer model.2 (C3) differs from YOLOv8's"),
        ((cls, *trusted(code_dir)), "is a classify model; convert reads Ultralytics YOLOv8 detection"),
    ]
    for args, fragment in cases:
        r = cli("convert", *args, "-o", tmp_path / "out.pt")
        lines = r.err.strip().splitlines()
        assert r.code == 1 and len(lines) == 1 and fragment in lines[0], (fragment, r.err)
        assert not (tmp_path / "out.pt").exists()
    assert "rerun with --trust" in cli("convert", best).err


def test_an_absurd_width_is_refused_before_any_memory_is_taken(v8_code):
    """model.1 with 8192 channels reads as width 64 and model.7 with 1024 as a cap of 16: a model of
    1024 channels everywhere (about 200 M parameters, 0.8 GB). The layout built from what was read is
    compared on the meta device, so the refusal comes before any of it is allocated."""
    import resource

    from optkit.foreign.convert_yolov8 import StructureError, convert_yolov8

    model = yolov8(v8_code)
    model.model[1].conv = torch.nn.Conv2d(8, 8192, 3, 2, 1, bias=False)
    model.model[7].conv = torch.nn.Conv2d(32, 1024, 3, 2, 1, bias=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(StructureError) as refused:
        convert_yolov8(model.float())
    assert str(refused.value).startswith("layer model.0 (Conv) differs from YOLOv8's: the file has ")
    assert "model.0.conv.weight [8, 3, 3, 3] where YOLOv8 has model.0.conv.weight [1024, 3, 3, 3]" in str(
        refused.value
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024
