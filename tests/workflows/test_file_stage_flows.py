"""fuse, strip, info, models and export as flows (docs/architecture.md, "Layers"): a request validated
on construction, `run_<command>(request)` returning plain data; the stages they call name no CLI flag
(they raise errors carrying the facts and the flow words the flag), and export names the graph's
outputs by the model's task."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import optkit
from optkit.checkpoint import checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.errors import ConfigError, DeviceError
from optkit.models import create_model
from optkit.stages.export import ExportConfig, ParityError, export_checkpoint, export_onnx

PACKAGE = Path(optkit.__file__).parent
STAGES = ("stages/export.py", "stages/fuse.py", "stages/strip.py")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
NAMES = ["blue", "green", "red"]


def _strings(path: Path) -> list[str]:
    """Every string literal of the module except docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


@pytest.mark.parametrize("module", STAGES)
def test_stages_name_no_cli_flag(module):
    flags = [s for s in _strings(PACKAGE / module) if FLAG.search(s)]
    assert flags == [], f"{module} words CLI flags: {flags}"


def test_the_moved_modules_are_gone():
    # foreign/export.py imported optkit.workflows.inputs and measure/describe.py opened files through it
    assert not (PACKAGE / "foreign" / "export.py").exists()
    assert not (PACKAGE / "measure" / "describe.py").exists()


@pytest.fixture
def ckpt_path(tmp_path):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).eval()
    return save_checkpoint(checkpoint_from_model(model, NAMES, 32), tmp_path / "m.pt")


# ---- the export stage raises facts, the flow words flags ------------------------------------------


@pytest.mark.parametrize(
    "field, value, stage_words, flow_words",
    [
        (
            "opset",
            5,
            "opset 5 is not supported: choose 11 to 20",
            "--opset 5 is not supported: choose 11 to 20",
        ),
        (
            "batch",
            0,
            "batch must be an integer in [1, 1024], got 0",
            "--batch-size must be an integer in [1, 1024], got 0",
        ),
        ("atol", 0.0, "atol must be > 0, got 0.0", "--atol must be > 0, got 0.0"),
        ("int8_target", "x", "int8_target must be one of", "--int8-target must be one of"),
    ],
)
def test_export_config_errors_carry_the_field_and_the_request_names_the_flag(
    field, value, stage_words, flow_words
):
    from optkit.workflows.export import ExportRequest

    with pytest.raises(ConfigError) as stage:
        ExportConfig(**{field: value}).validate()
    assert str(stage.value).startswith(stage_words) and stage.value.field == field
    assert not FLAG.search(str(stage.value))
    with pytest.raises(ConfigError) as flow:
        ExportRequest(weights="never-opened.pt", **{field: value})
    assert str(flow.value).startswith(flow_words)


def test_quantized_only_options_are_facts_in_the_stage_and_flags_in_the_flow(cli, ckpt_path, tmp_path):
    with pytest.raises(ConfigError) as stage:
        export_checkpoint(
            load_checkpoint(ckpt_path), tmp_path / "a.onnx", ExportConfig(int8_target="tensorrt")
        )
    assert stage.value.field == "int8_target" and not FLAG.search(str(stage.value))
    r = cli("export", ckpt_path, "--int8-target", "tensorrt", "-o", tmp_path / "b.onnx")
    assert r.code == 1 and r.err.startswith("error: --int8-target needs a quantized checkpoint")
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_half_without_cuda_is_a_fact_in_the_stage_and_a_flag_in_the_flow(ckpt_path, tmp_path):
    from optkit.stages.export import half_device
    from optkit.workflows.export import ExportRequest, run_export

    with pytest.raises(DeviceError) as stage:
        half_device()
    assert stage.value.field == "half" and not FLAG.search(str(stage.value))
    with pytest.raises(
        DeviceError, match=r"^--half exports an fp16 graph on CUDA, but CUDA is not available"
    ):
        run_export(ExportRequest(weights=str(ckpt_path), half=True))


class _BatchDependent(nn.Module):
    """Right at batch 1 only: a dynamic export fails its parity check at batch 4."""

    stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.conv(x)).flatten(1)
        return y if x.shape[0] == 1 else y * 2 + 1


def test_a_failed_parity_check_carries_its_figures_and_the_flow_adds_the_flag(tmp_path):
    from optkit.stages.export import ExportError
    from optkit.workflows.export import flags_worded

    target = tmp_path / "m.onnx"
    with pytest.raises(ParityError) as stage:
        export_onnx(_BatchDependent(), target, ExportConfig(imgsz=32, dynamic=True))
    e = stage.value
    assert e.max_rel > 1e-4 and math.isfinite(e.max_rel) and e.int8_target is None
    assert str(e).startswith(e.summary) and e.summary.endswith("nothing written")
    assert not FLAG.search(str(e)) and not target.exists()
    with pytest.raises(ExportError) as worded, flags_worded():
        raise ParityError(e.summary, e.max_rel, simplified=True, int8_target=None)
    assert str(worded.value) == e.summary + "; the graph was simplified by onnxslim, try --no-simplify"
    with pytest.raises(ExportError) as worded, flags_worded():
        raise ParityError(e.summary, 0.0123, simplified=True, int8_target="onnxruntime")
    assert str(worded.value) == e.summary + "; --atol 0.013 accepts this difference"


# ---- export names the graph's outputs by the task --------------------------------------------------


class _TwoOutputs(nn.Module):
    stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.mean((2, 3)), y.amax((2, 3))


def _outputs(path) -> list[str]:
    return [o.name for o in onnx.load(str(path)).graph.output]


@pytest.mark.parametrize(
    "names, expected",
    [(None, ["output0", "output1"]), (("a",), ["output0", "output1"]), (("a", "b"), ["a", "b"])],
)
def test_graph_outputs_take_the_task_names_when_they_name_every_output(tmp_path, names, expected):
    report = export_onnx(_TwoOutputs(), tmp_path / "m.onnx", ExportConfig(imgsz=32, output_names=names))
    assert _outputs(tmp_path / "m.onnx") == expected and report.worst().max_rel <= 1e-4


def test_export_asks_the_checkpoint_task_for_output_names(ckpt_path, tmp_path, monkeypatch):
    from optkit.tasks import get_task
    from optkit.workflows.export import ExportRequest, run_export

    monkeypatch.setattr(type(get_task("classify")), "output_names", ("class_scores",))
    result = run_export(ExportRequest(weights=str(ckpt_path), output=str(tmp_path / "a.onnx")))
    assert _outputs(tmp_path / "a.onnx") == ["class_scores"] and result["checked"]


def test_a_task_this_optkit_does_not_know_exports_output0_and_refuses_data(tmp_path, tiny_data):
    from optkit.workflows.export import ExportRequest, run_export

    torch.manual_seed(0)
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=3).eval(), NAMES, 32)
    ckpt.task = "not-a-task-here"
    path = save_checkpoint(ckpt, tmp_path / "odd.pt")
    run_export(ExportRequest(weights=str(path)))
    assert _outputs(tmp_path / "odd.onnx") == ["output0"]
    with pytest.raises(ConfigError, match=r"^--data: .* is a not-a-task-here model"):
        run_export(ExportRequest(weights=str(path), data=str(tiny_data), output=str(tmp_path / "b.onnx")))
    assert not (tmp_path / "b.onnx").exists()


# ---- the other flows: requests and results ---------------------------------------------------------


def test_fuse_request_and_result(ckpt_path, tmp_path):
    from optkit.workflows.fuse import FuseRequest, run_fuse

    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"^--atol must be > 0"):
            FuseRequest(weights=str(ckpt_path), atol=bad)
    result = run_fuse(FuseRequest(weights=str(ckpt_path), output=str(tmp_path / "f.pt")))
    assert result["output"] == str(tmp_path / "f.pt") and result["fused"] and result["bn_left"] == {}
    assert result["params_after"] < result["params_before"] and result["max_rel"] <= 1e-4
    entry = load_checkpoint(tmp_path / "f.pt").transforms[-1]
    assert entry["kind"] == "fuse" and entry["fused"] == result["fused"]


def test_strip_and_info_results(ckpt_path, tmp_path):
    from optkit.workflows.info import InfoRequest, run_info
    from optkit.workflows.strip import StripRequest, run_strip

    stripped = run_strip(StripRequest(weights=str(ckpt_path), half=True))
    assert stripped["output"] == str(ckpt_path.with_name("m-stripped.pt")) and stripped["half"]
    assert stripped["bytes_after"] < stripped["bytes_before"]
    info = run_info(InfoRequest(weights=stripped["output"]))
    assert info["arch"] == "test-tiny" and info["names"] == NAMES and info["precision"] == "float16"
    assert info["lineage"][-1]["stage"] == "strip"


def test_models_request_and_result():
    from optkit.workflows.models import ModelsRequest, run_models

    for bad in (0, True, 10**9):
        with pytest.raises(ConfigError, match=r"^--num-classes must be an integer in \[1, 100000\]"):
            ModelsRequest(num_classes=bad)
    result = run_models(ModelsRequest(include_test=True, num_classes=7))
    rows = {m["name"]: m for m in result["models"]}
    assert result["num_classes"] == 7 and "test-tiny" in rows and rows["test-tiny"]["stride"] == 32
    assert rows["test-tiny"]["params"] == sum(
        p.numel() for p in create_model("test-tiny", num_classes=7).parameters()
    )
