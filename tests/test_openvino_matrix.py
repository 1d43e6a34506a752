"""Issue 16's test matrix for OpenVINO IRs: every zoo model exports to an IR that passes parity, an INT8
IR reproduces the fake-quant model within the ONNX Runtime flavour's tolerance, `val` of an IR equals
`val` of its ONNX file, and a missing extra is one line.

Everything that loads OpenVINO runs in a process of its own (a script through `_run_script`): OpenVINO's
threads left in the test process crashed a later test that signals itself (see tests/test_ovrt.py's cli
fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino", reason="the openvino extra (pip install 'optkit[openvino]')")

from optkit.models import get_spec, list_models  # noqa: E402
from optkit.quant.onnx_export import ATOL_INT8  # noqa: E402

ZOO_IMGSZ = 32  # pixels: the smallest size every zoo model takes (stride 32), to keep the loop fast
CLASSES = ["blue", "green", "red"]


def _run_script(source: str, *args, cwd) -> dict:
    """Run `source` (Python printing one JSON object on its last line) as its own process."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *[str(a) for a in args]],
        capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Exports every registered model (zoo and test models, random weights) as an IR at ZOO_IMGSZ px through
# the export workflow (ONNX checked against PyTorch, IR checked against the ONNX file), then runs each IR
# at f32 against the PyTorch model itself. One process for the whole zoo: one OpenVINO start-up.
ZOO_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.models import create_model, get_spec
from optkit.ovrt import OvModel
from optkit.workflows.export import ExportRequest, run_export

folder, imgsz, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
results = {}
for name in names:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    ckpt = checkpoint_from_model(model, ["a", "b", "c"], imgsz, task=get_spec(name).task)
    pt = save_checkpoint(ckpt, folder / f"{name}.pt")
    report = run_export(ExportRequest(str(pt), imgsz=imgsz, output=str(folder / f"{name}_openvino"),
                                      format="openvino"))
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = build_model(load_checkpoint(pt)).eval()(x)
    ref = ref[0] if isinstance(ref, tuple) else ref
    got = OvModel(report["output"], threads=1, precision="f32")(x)
    results[name] = {
        "ir_max_rel": report["openvino"]["max_rel"], "ir_atol": report["openvino"]["atol"],
        "files": sorted(p.name for p in Path(report["output"]).iterdir()),
        "shape_ok": list(got.shape) == list(ref.shape),
        "vs_torch": ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item(),
    }
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_zoo_model_exports_to_an_ir_that_passes_parity(tmp_path):
    # optkit's own models: a test may have registered one in this process that the script's cannot see
    names = list_models(include_test=True)
    names = [n for n in names if get_spec(n).factory.__module__.startswith("optkit.")]
    results = _run_script(ZOO_SCRIPT, tmp_path, ZOO_IMGSZ, *names, cwd=tmp_path)
    assert sorted(results) == sorted(names)
    for name, r in results.items():
        assert r["files"] == [f"{name}_openvino.bin", f"{name}_openvino.xml"], name
        assert r["ir_max_rel"] <= r["ir_atol"], (name, r)
        assert r["shape_ok"] and r["vs_torch"] <= 1e-4, (name, r)


# For each checkpoint named on the command line: its IR (export workflow, into irs/<stem>/<stem>_openvino,
# whose parents do not exist yet), `val` of the IR at f32, and for a quantized one the largest difference
# between the IR and the fake-quant model on random inputs (max |Δ| relative to the fake-quant output's
# largest magnitude). One process: one OpenVINO start-up for the whole matrix.
IR_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from optkit.checkpoint import build_model, load_checkpoint
from optkit.ovrt import OvModel
from optkit.workflows.export import ExportRequest, run_export
from optkit.workflows.val import ValRequest, run_val

data, imgsz, results = sys.argv[1], int(sys.argv[2]), {}
for pt in map(Path, sys.argv[3:]):
    folder = pt.parent / "irs" / pt.stem / f"{pt.stem}_openvino"  # -o under folders export creates
    export = run_export(ExportRequest(str(pt), output=str(folder), data=data, format="openvino"))
    val = run_val(ValRequest(str(folder), data=data, workers=0, precision="f32"))
    r = {"openvino": export["openvino"], "int8": export["int8"], "val": val}
    if export["int8"]:
        fake_quant, ir = build_model(load_checkpoint(pt)).eval(), OvModel(folder, threads=1, precision="f32")
        worst = 0.0
        for seed in range(3):
            x = torch.rand(4, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                ref = fake_quant(x)
            worst = max(worst, ((ir(x) - ref).abs().max() / ref.abs().max()).item())
        r["vs_fake_quant"], r["metadata"] = worst, ir.metadata
    results[pt.stem] = r
print(json.dumps(results, default=str))
"""


def _float_ckpt(folder, name: str, data=None, **kwargs):
    """A registry classifier with non-trivial BatchNorm statistics, saved; with `data`, first fitted to
    its train split (the colours: 40 AdamW steps), so that its val top-1 is not a constant-class guess."""
    import torch

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **kwargs).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    if data is not None:
        _fit(model, data)
    return save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32), folder / f"{name}.pt")


def _fit(model, data, steps: int = 40) -> None:
    import torch

    from optkit.data import IMAGENET_MEAN, IMAGENET_STD
    from optkit.data.folder import ImageFolder
    from optkit.data.transforms import ValTransform

    train = ImageFolder(
        data / "train", ValTransform(32, mean=IMAGENET_MEAN, std=IMAGENET_STD), classes=CLASSES
    )
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor([train[i][1] for i in range(len(train))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Tiny classifiers fitted to the colours, float and calibrated by ptq-calibrate (ReLU: test-resnet;
    SiLU: test-tiny), each as an ONNX file validated by ONNX Runtime (in this process) and as an IR
    validated by OpenVINO (IR_SCRIPT's process). {stem: {"onnx_val", "openvino", "int8", "val", ...}}."""
    from image_folders import write_image_folder

    from optkit.quant.config import QuantConfig
    from optkit.workflows.export import ExportRequest, run_export
    from optkit.workflows.ptq import PtqRequest, run_ptq
    from optkit.workflows.val import ValRequest, run_val

    folder = tmp_path_factory.mktemp("ov-matrix")
    data = write_image_folder(folder / "colors", CLASSES, per_class=24)
    relu = _float_ckpt(folder, "test-resnet", data)
    silu = _float_ckpt(folder, "test-tiny", data, act="silu")
    pts = [relu]
    for src, stem in ((relu, "q-relu"), (silu, "q-silu")):
        request = PtqRequest(str(src), str(data), num_images=24, quant=QuantConfig(method="max"),
                             output=str(folder / f"{stem}.pt"))  # fmt: skip
        run_ptq(request)
        pts.append(folder / f"{stem}.pt")
    results = _run_script(IR_SCRIPT, data, 32, *pts, cwd=folder)
    for pt in pts:
        onnx = pt.with_suffix(".onnx")  # the INT8 IR's flavour (export.openvino_int8_target)
        flavour = {"q-relu": "onnxruntime", "q-silu": "openvino"}.get(pt.stem)
        run_export(ExportRequest(str(pt), output=str(onnx), int8_target=flavour))
        results[pt.stem]["onnx_val"] = run_val(ValRequest(str(onnx), data=str(data), workers=0))
    return results


@pytest.mark.parametrize(("stem", "flavour"), [("q-relu", "onnxruntime"), ("q-silu", "openvino")])
def test_int8_ir_reproduces_the_fake_quant_model(matrix, stem, flavour):
    """ReLU and SiLU: the IR of a ptq-calibrate checkpoint (converted from the Q/DQ flavour OpenVINO runs
    fastest: the onnxruntime one for a ReLU classifier, the openvino one for SiLU) stays within the
    onnxruntime flavour's parity tolerance of the fake-quant PyTorch model on random inputs, and runs
    most convolutions in 8 bits."""
    r = matrix[stem]
    assert r["int8"]["target"] == flavour and flavour in json.dumps(r["metadata"]["quantization"])
    assert r["vs_fake_quant"] <= ATOL_INT8["onnxruntime"], r["vs_fake_quant"]
    assert r["openvino"]["convs"] and r["openvino"]["int8_convs"] >= r["openvino"]["convs"] // 2


@pytest.mark.parametrize("stem", ["test-resnet", "q-relu", "q-silu"])
def test_val_of_a_classifier_ir_equals_val_of_its_onnx(matrix, stem):
    """The same classifier as ONNX (ONNX Runtime) and as an IR (OpenVINO at f32), fp32 and INT8 (the IR
    from the same Q/DQ flavour as the ONNX file): top-1 within 0.2 percentage points on the same images."""
    a, b = matrix[stem]["onnx_val"], matrix[stem]["val"]
    assert b["runtime"] == "openvino (f32)" and a["runtime"] == "onnxruntime"
    assert a["images"] == b["images"] > 0 and a["top1"] > 0.5  # a fitted model, not a constant guess
    assert abs(a["top1"] - b["top1"]) <= 0.002, (a["top1"], b["top1"])


# The CLI with `import openvino` failing (as when the extra is not installed): each command line given as
# a JSON list runs through optkit's entry point; its exit code and stderr lines are printed.
NO_OPENVINO = """
import contextlib, io, json, sys
sys.modules["openvino"] = None
from optkit.cli.app import main
results = []
for args in map(json.loads, sys.argv[1:]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    results.append({"args": args, "code": code, "lines": err.getvalue().strip().splitlines()})
print(json.dumps(results))
"""


def test_without_the_extra_each_command_is_one_line(tmp_path):
    """export --format openvino, and val, benchmark and profile of an IR folder: one `error:` line naming
    the extra, exit 1, nothing written."""
    pt = _float_ckpt(tmp_path, "test-tiny")
    folder = tmp_path / "ir_openvino"
    fake_ir = tmp_path / "fake_openvino"
    fake_ir.mkdir()
    (fake_ir / "fake_openvino.xml").write_text("<net/>")
    (fake_ir / "fake_openvino.bin").write_bytes(b"\0" * 8)
    commands = [
        ["export", str(pt), "--format", "openvino", "-o", str(folder)],
        ["val", str(fake_ir), "--data", "builtin:shapes"],
        ["benchmark", str(fake_ir), "--rounds", "1"],
        ["profile", str(fake_ir)],
    ]
    results = _run_script(NO_OPENVINO, *map(json.dumps, commands), cwd=tmp_path)
    assert [r["args"] for r in results] == commands
    for r in results:
        assert r["code"] == 1 and len(r["lines"]) == 1 and r["lines"][0].startswith("error: "), r
        assert "pip install 'optkit[openvino]'" in r["lines"][0], r
    assert not folder.exists() and not list(tmp_path.glob(".*"))
