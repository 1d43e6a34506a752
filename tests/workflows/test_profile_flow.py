"""profile's and val's layers (docs/architecture.md, "Layers"): the flows open the model files; the
measure modules measure what they are handed, open no user's file and name no CLI flag."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
import torch

import optkit
from optkit.errors import ConfigError
from optkit.models import create_model

MEASURE = Path(optkit.__file__).parent / "measure"
MODULES = ("validate.py", "evaluate.py", "profile.py", "profile_onnx.py", "profile_torch.py")
UPWARD = ("optkit.workflows", "optkit.cli", "optkit.report")  # optkit.report.progress is layer 0
# calls that open a model file (json.load of profile_onnx's own trace, in its temp folder, is not one)
OPENERS = {"open_model", "load_optkit_onnx", "load_onnx", "InferenceSession", "load_checkpoint"}
OPENERS |= {"torch.load", "onnx.load", "torch.jit.load"}
FLAG = re.compile(r"--[a-z][a-z-]+")


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _called(tree: ast.AST) -> set[str]:
    """Names of what is called: `f`, and `x.f` also as `f` (so `ort.InferenceSession` is seen)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
            if isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (they may cite flags: they are not messages)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


@pytest.mark.parametrize("module", MODULES)
def test_measure_imports_no_flow_opens_no_file_and_names_no_flag(module):
    tree = ast.parse((MEASURE / module).read_text())
    upward = [m for m in _imports(tree) if m.startswith(UPWARD) and m != "optkit.report.progress"]
    assert not upward, f"{module} imports {upward}"
    opens = _called(tree) & OPENERS
    assert not opens, f"{module} opens a model file: {opens}"
    docs = _docstrings(tree)
    strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    texts = [n.value for n in strings if id(n) not in docs]
    flags = [t for t in texts if FLAG.search(t)]
    assert not flags, f"{module} names CLI flags in {flags}"


def _onnx_bytes(model, imgsz: int = 32) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        torch.zeros(1, 3, imgsz, imgsz),
        buffer,
        dynamo=False,
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    return buffer.getvalue()


def test_profile_measures_an_onnx_session_it_is_handed():
    """No file at all: the graph and its sessions come from bytes in memory."""
    import onnx
    import onnxruntime as ort

    from optkit.measure.profile import ProfilePlan, profile_target
    from optkit.measure.profile_onnx import OnnxTarget

    data = _onnx_bytes(create_model("test-tiny"))
    opened = []

    def open_session(profile_prefix):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if profile_prefix is not None:
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        opened.append(profile_prefix)
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    target = OnnxTarget(onnx.load_from_string(data), open_session, "in-memory", ["CPUExecutionProvider"], 1)
    plan = ProfilePlan(imgsz=32, batch_size=2, batch_sizes=[1, 2], warmup=0, runs=2, per_layer=True, top=3)
    result = profile_target(target, plan)
    assert result["params"] > 0 and result["gflops"] > 0 and result["latency"]["median_ms"] > 0
    assert [row["batch_size"] for row in result["sweep"]] == [1, 2] and result["per_layer"]["rows"]
    assert opened[0] is None and opened[1] is not None  # one session to time, one with the profiler on


def test_profile_measures_a_module_with_backward():
    from optkit.measure.profile import ProfilePlan, profile_target
    from optkit.measure.profile_torch import TorchTarget

    target = TorchTarget(create_model("test-tiny"), torch.device("cpu"), threads=1)
    result = profile_target(target, ProfilePlan(imgsz=32, warmup=0, runs=2, backward=True))
    assert result["backward"]["median_ms"] > 0 and result["params"] < result["params_unfused"]


def test_per_layer_of_torchscript_is_refused_before_any_step(cli, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.trace(create_model("test-tiny").eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    r = cli("profile", path, "--per-layer", "--runs", "1", "--warmup", "0")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1, r.err
    assert lines[0] == "error: --per-layer needs forward hooks, which a TorchScript module does not run"


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_sizes": [1, 2000]}, "--batch-sizes"),
        ({"runs": 0}, "--runs"),
        ({"warmup": -1}, "--warmup"),
        ({"top": 0}, "--top"),
        ({"threads": 0}, "--threads"),
        ({"fraction": 1.5}, "--fraction"),
        ({"fraction": True}, "--fraction"),
    ],
)
def test_the_profile_request_checks_its_values(options, flag):
    from optkit.workflows.profile import ProfileRequest

    with pytest.raises(ConfigError, match=f"^{flag} must be"):
        ProfileRequest(**options)


def test_the_val_request_checks_its_batch():
    from optkit.workflows.val import ValRequest

    with pytest.raises(ConfigError, match=r"^--batch-size must be an integer in \[1, 65536\], got 0$"):
        ValRequest("m.pt", batch_size=0)
