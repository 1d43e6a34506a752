"""Other files optkit did not write: a plain state_dict (--model NAME), a TorchScript archive (profile and
export only), and reading a pickle's globals without running it."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from foreign_helpers import IMGSZ, NAMES, detector, purge_family, ultralytics_file

from optkit.models import create_model


def _one_line(r, *fragments):
    assert r.code == 1, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def state_dict_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).eval()
    for m in model.modules():  # non-trivial BN statistics, so fusing them is measurable
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_state_dict_needs_model_name(cli, state_dict_file):
    path, _ = state_dict_file
    for command in (("info",), ("fuse",), ("export",), ("profile",), ("strip",)):
        _one_line(cli(*command, path), "plain state_dict", "--model NAME")
    _one_line(cli("info", path, "--model", "no-such-model"), "unknown model", "resnet18")
    _one_line(cli("info", path, "--model", "resnet18"), "does not fit model 'resnet18'")
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.pt"]


def test_state_dict_info_fuse_export_profile(cli, state_dict_file, tmp_path):
    from optkit.checkpoint import build_model, load_checkpoint

    path, model = state_dict_file
    d = cli("info", path, "--model", "test-tiny", "--json").json()
    assert (
        d["arch"] == "test-tiny"
        and d["num_classes"] == 3
        and d["params"] == sum(p.numel() for p in model.parameters())
    )

    r = cli("fuse", path, "--model", "test-tiny", "--json")
    assert r.code == 0, r.err
    fused = load_checkpoint(tmp_path / "weights-fused.pt")  # an optkit checkpoint (weights_only=True)
    assert [e["stage"] for e in fused.lineage] == ["import", "fuse"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), build_model(fused)(x)
    assert (out - ref).abs().max().item() / ref.abs().max().item() < 1e-4

    r = cli("export", path, "--model", "test-tiny", "--json")
    assert r.code == 0, r.err
    assert r.json()["max_rel"] < 1e-4 and r.json()["metadata"]["arch"] == "test-tiny"

    r = cli(
        "profile", path, "--model", "test-tiny", "--runs", "2", "--warmup", "1", "--threads", "1", "--json"
    )
    assert r.code == 0, r.err
    assert r.json()["source_format"] == "state_dict in test-tiny" and r.json()["num_classes"] == 3


def test_model_name_only_for_state_dicts(cli, tmp_path):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint

    ckpt = save_checkpoint(checkpoint_from_model(create_model("test-tiny", 3), NAMES, 32), tmp_path / "m.pt")
    _one_line(cli("info", ckpt, "--model", "test-tiny"), "--model is for plain state_dict files")


@pytest.fixture
def torchscript_file(tmp_path, code_dir):
    """What YOLOv5/Ultralytics export: the model traced with Detect.export = True (one flat output), and
    config.txt with stride and names."""
    model = detector(code_dir).eval()
    model.model[-1].export = True
    with torch.no_grad():
        model(torch.zeros(1, 3, IMGSZ, IMGSZ))
    traced = torch.jit.trace(model, torch.zeros(1, 3, IMGSZ, IMGSZ), strict=False, check_trace=False)
    path = tmp_path / "best.torchscript"
    config = {"shape": [1, 3, IMGSZ, IMGSZ], "stride": 32, "names": {str(i): n for i, n in enumerate(NAMES)}}
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(config)})
    purge_family()  # TorchScript needs no Python code from the family
    with torch.no_grad():
        expected = model(torch.ones(1, 3, IMGSZ, IMGSZ))[0]
    return path, expected


def test_torchscript_profile_and_export(cli, torchscript_file, tmp_path):
    import onnx
    import onnxruntime as ort

    path, expected = torchscript_file
    r = cli("profile", path, "--runs", "2", "--warmup", "1", "--threads", "1", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["source_format"] == "TorchScript" and d["imgsz"] == IMGSZ and d["num_classes"] == 3
    assert d["bn_folded"] is None and d["latency"]["median_ms"] > 0

    r = cli("export", path, "--json")
    assert r.code == 0, r.err
    assert r.json()["max_rel"] < 1e-4
    onnx_path = tmp_path / "best.onnx"
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["names"]) == NAMES and meta["stride"] == "32"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": torch.ones(1, 3, IMGSZ, IMGSZ).numpy()})
    assert abs(out - expected.numpy()).max() < 1e-3 * abs(expected.numpy()).max()


@pytest.mark.parametrize("command", ["info", "fuse", "prune", "strip", "val"])
def test_torchscript_refused_elsewhere(cli, torchscript_file, tiny_data, command):
    path, _ = torchscript_file
    extra = ("--data", tiny_data) if command == "val" else ()
    _one_line(cli(command, path, *extra), "TorchScript", "profile and export")


def test_pickle_globals_read_without_importing(tmp_path, code_dir):
    from optkit.foreign.scan import hostile_globals, pickle_globals, unsafe_globals

    path = ultralytics_file(detector(code_dir), tmp_path / "best.pt", "best")
    names = pickle_globals(path)
    assert "yolo_like" not in sys.modules  # nothing was imported to read them
    assert "yolo_like.yolo.DetectionModel" in unsafe_globals(names) and "yolo_like.yolo.Detect" in names
    assert not any(n.startswith("torch._utils") for n in unsafe_globals(names))
    assert hostile_globals(names) == []
    assert hostile_globals(["posix.system", "builtins.eval", "io.open", "collections.OrderedDict"]) == [
        "posix.system",
        "builtins.eval",
        "io.open",
    ]
