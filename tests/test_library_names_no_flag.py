"""Library code names no CLI flag (docs/architecture.md, Layers; issue 12, part 2): its errors carry the
facts (a field, a value, what would work) and the flow that owns the flags words them, so the messages
users see are unchanged. The scan reads every string literal of the library packages except docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

OPTKIT = Path(__file__).parents[1] / "optkit"
LIBRARY = ("models", "data", "measure", "tasks", "stages", "quant", "train", "foreign", "checkpoint",
           "sparse", "onnxrt", "transforms", "pictures")  # fmt: skip
FLAG = re.compile(r"--[a-z]")
# module -> (how many of its literals name a flag, why they still do); the test fails when that number
# changes either way, so this list stays true
KNOWN: dict[str, tuple[int, str]] = {
    "quant/silu_form.py": (
        2,
        "QdqReport.silu_reason: report text, not an error; 'as asked (--silu-form F)', 'parity not "
        "checked (--no-check)'",
    ),
    "train/autobatch.py": (2, "a note the trainer shows, not an error: 'using --batch-size N'"),
    "train/optim.py": (1, "a note the trainer shows, not an error: the warm-up cut, 'from --lr0 X'"),
    "train/trainer.py": (
        7,
        "the train command's own resume and interrupt advice ('continue with --resume', twice), the "
        "--sync-bn note, and load_checkpoint's reader names ('train --weights' x3, 'train --resume') that "
        "workflows.inputs words as the command reading the file",
    ),
}


def _library_files() -> list[Path]:
    files = []
    for name in LIBRARY:
        package, module = OPTKIT / name, OPTKIT / f"{name}.py"
        files += sorted(package.rglob("*.py")) if package.is_dir() else [module]
    return files


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _flagged(path: Path) -> list[str]:
    """The string literals of a module (f-string parts included, docstrings not) that name a flag."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and FLAG.search(node.value)
    ]


def test_the_scan_reads_literals_and_f_string_parts_but_not_docstrings(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def f(x):\n    """--doc is fine"""\n    raise ValueError(f"--amount {x} is wrong")\n')
    assert _flagged(planted) == ["--amount "]
    assert len(_library_files()) > 40 and all(f.exists() for f in _library_files())


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(OPTKIT)))
def test_library_module_names_no_flag(path):
    module = str(path.relative_to(OPTKIT))
    found = _flagged(path)
    expected, why = KNOWN.get(module, (0, ""))
    assert len(found) == expected, f"{module} names a CLI flag in {found} (expected {expected}: {why})"


# --- the facts the errors carry, and the flow's words for them ---------------------------------------


def _tiny():
    from optkit.models import create_model

    torch.manual_seed(0)
    return create_model("test-tiny", num_classes=3).eval()


def test_an_unknown_skip_carries_the_layer_and_the_quantizable_layers():
    from optkit.limits import FieldError
    from optkit.quant.config import QuantConfig
    from optkit.quant.quantizers import UnknownLayerError, insert_quantizers, quantizable_layers

    model = _tiny()
    with pytest.raises(UnknownLayerError) as info:
        insert_quantizers(model, QuantConfig(skip=["model.99"]))
    known = quantizable_layers(model)
    assert isinstance(info.value, FieldError) and info.value.field == "skip"
    assert (info.value.layer, info.value.known) == ("model.99", known)
    assert str(info.value) == (
        f"skip model.99: no quantizable layer has that name (Conv/Linear layers: {', '.join(known[:6])}, …)"
    )


def test_ptq_words_an_unknown_skip_in_its_flag(cli, tmp_path, tiny_data):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.quant.quantizers import quantizable_layers

    model = _tiny()
    src = save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), tmp_path / "m.pt")
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "8", "--skip", "model.99")
    listed = ", ".join(quantizable_layers(model)[:6])
    assert r.code == 1 and r.err.strip() == (
        f"error: --skip model.99: no quantizable layer has that name (Conv/Linear layers: {listed}, …; "
        "`optkit ptq-calibrate --sensitivity` lists them all)"
    )
    assert not (tmp_path / "m-int8.pt").exists()


def _tiny_ckpt(folder: Path) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint

    return save_checkpoint(checkpoint_from_model(_tiny(), ["blue", "green", "red"], 32), folder / "m.pt")


def test_an_input_size_the_model_cannot_take_names_imgsz_and_a_flow_says_its_flag(cli, tmp_path, tiny_data):
    from optkit.errors import ModelError
    from optkit.limits import FieldError
    from optkit.models.imgsz import check_imgsz

    with pytest.raises(ModelError) as info:
        check_imgsz(50)
    assert isinstance(info.value, FieldError) and info.value.field == "imgsz"
    assert str(info.value) == "imgsz 50 is not a multiple of the model's stride 32; use 32 or 64"
    assert str(info.value.for_option("--imgsz")) == "--imgsz " + info.value.detail
    assert isinstance(info.value.for_option("--imgsz"), ModelError)
    r = cli("val", _tiny_ckpt(tmp_path), "--data", tiny_data, "--imgsz", "50")
    assert (
        r.code == 1
        and r.err.strip() == "error: --imgsz 50 is not a multiple of the model's stride 32; use 32 or 64"
    )


def test_a_fixed_size_graph_names_imgsz_and_dynamic_and_val_says_the_flags(cli, tmp_path, tiny_data):
    from optkit.limits import FieldsError
    from optkit.onnxrt import load_optkit_onnx

    graph = tmp_path / "m.onnx"
    assert cli("export", _tiny_ckpt(tmp_path), "-o", graph).code == 0
    model, _ = load_optkit_onnx(graph)
    with pytest.raises(FieldsError) as info:
        model.check_input_size(64)
    assert set(info.value.fields) == {"imgsz", "dynamic"}
    fields_named = "use imgsz 32, or export with dynamic for other sizes"
    assert str(info.value) == f"{graph} takes a fixed 32x32 input, not 64x64: {fields_named}"
    r = cli("val", graph, "--data", tiny_data, "--imgsz", "64")
    assert r.code == 1 and r.err.strip() == (
        f"error: {graph} takes a fixed 32x32 input, not 64x64: use --imgsz 32, or export with --dynamic for "
        "other sizes"
    )


def test_a_trusted_load_names_code_dir_and_open_model_says_the_flag(tmp_path):
    from optkit.errors import CheckpointError
    from optkit.foreign.checkpoint import import_path
    from optkit.workflows.inputs import open_model

    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError, match=f"^code_dir {re.escape(str(missing))}: no such folder$"):
        with import_path(missing):
            pass
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a pickled module: loads only trusted
    with pytest.raises(CheckpointError) as info:
        open_model(tmp_path / "pickled.pt", command="info", trust=True, code_dir=str(missing))
    assert str(info.value) == f"--code-dir {missing}: no such folder"


def _candidate(form: str, max_rel: float):
    from types import SimpleNamespace

    from optkit.quant.silu_form import Candidate

    case = SimpleNamespace(
        max_rel=max_rel, input="random", shape=[4, 3, 32, 32], label=lambda: "random 4x3x32x32"
    )
    return Candidate(form, graph=None, report=None, cases=[case])


def test_silu_form_refusals_name_fields_and_export_says_the_flags():
    from optkit.quant.silu_form import SiluFormError, _all_fail
    from optkit.stages.export import ExportError
    from optkit.workflows.export import flags_worded

    error = _all_fail([_candidate("quickgelu", 0.63), _candidate("qlinear", 0.15)], atol=0.1)
    assert isinstance(error, ExportError) and isinstance(error, SiluFormError)
    figures = "quickgelu 0.63 on random 4x3x32x32; qlinear 0.15 on random 4x3x32x32"
    head = (
        "no SiLU form of the INT8 graph passes the parity check (max |Δ| / output scale, atol=0.1): "
        + figures
    )
    assert str(error) == (
        f"{head}; nothing written. int8_target tensorrt matches the fake-quant model (Q/DQ only where it "
        "quantizes; a graph for TensorRT); or accept the difference with atol 0.15; data D adds the figure "
        "on real images"
    )
    with pytest.raises(ExportError) as worded, flags_worded():
        raise error
    assert str(worded.value) == (
        f"{head}; nothing written. --int8-target tensorrt matches the fake-quant model (Q/DQ only where it "
        "quantizes; a graph for TensorRT); or accept the difference with --atol 0.15; --data D adds the "
        "figure on real images"
    )


def test_int8_export_below_its_opset_says_the_flag(cli, tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "checkpoints" / "int8.pt"
    r = cli("export", fixture, "--opset", "11", "-o", tmp_path / "q.onnx")
    assert (
        r.code == 1
        and r.err.strip() == "error: INT8 export needs --opset 13 or newer (per-channel QuantizeLinear)"
    )
    assert not (tmp_path / "q.onnx").exists()


# --- the trainer and its config name TrainConfig's fields; `optkit train` says its flags ---------------

PLAIN = Path(__file__).parent / "fixtures" / "checkpoints" / "plain.pt"
CPU_BN = "(BatchNorm cannot train on a batch of one image)"


TRAIN_REFUSALS = {  # args -> the error line's words (after "error: ")
    "imgsz": (["--model", "test-tiny", "--imgsz", "48"],
              "--imgsz 48 is not a multiple of the model's stride 32; use 32 or 64"),
    "freeze": (["--model", "test-tiny", "--freeze", "50"],
               "--freeze 50: the model has only 8 top-level blocks (the last is the head)"),
    "act": (["--weights", PLAIN, "--act", "relu"],
            "--act, --dropout and --model-opt apply to --model; a checkpoint keeps its own"),
    "no-model": ([], "give --model NAME (train from scratch) or --weights CKPT (fine-tune)"),
    "model-and-weights": (["--model", "test-tiny", "--weights", PLAIN],
                          "give either --model or --weights, not both"),
    "optimizer": (["--model", "test-tiny", "--optimizer", "Lion"],
                  "--optimizer must be one of SGD, Adam, AdamW, RMSProp, got 'Lion'"),
    "sync-bn": (["--model", "test-tiny", "--sync-bn", "--device", "cpu"],
                "--sync-bn needs CUDA (torch's SyncBatchNorm runs only on GPUs with nccl), not cpu"),
    "batch-1": (["--model", "test-tiny", "--batch-size", "1"],
                "--batch-size 1: the model has BatchNorm layers, which need at least 2 images per process to "
                "train; use --batch-size 2 or more"),
    "fraction": (["--model", "test-tiny", "--fraction", "0.01"],
                 f"--fraction 0.01 keeps 1 of 72 training images; training needs at least 2 images {CPU_BN}: "
                 "use --fraction >= 0.028"),
}  # fmt: skip


@pytest.mark.parametrize("case", TRAIN_REFUSALS)
def test_train_words_the_trainers_refusals_in_its_flags(cli, tmp_path, tiny_data, case):
    args, line = TRAIN_REFUSALS[case]
    runs = tmp_path / "runs"
    r = cli("train", *args, "--data", tiny_data, "--epochs", "1", "--workers", "0", "--project", runs)
    assert r.code == 1 and r.err.strip() == f"error: {line}", r.err
    assert not (runs / "exp" / "weights").exists()


def test_train_resume_refusals_name_the_flags(cli, tmp_path, tiny_data):
    import shutil

    runs = tmp_path / "runs"
    train = ("train", "--model", "test-tiny", "--data", tiny_data, "--workers", "0", "--project", runs)
    assert cli(*train, "--epochs", "2", "--stop-after", "1").code == 0
    last = runs / "exp" / "weights" / "last.pt"
    lone = tmp_path / "lone.pt"
    shutil.copy(last, lone)
    r = cli("train", "--resume", lone)
    assert r.err.strip() == (
        f"error: {lone} is not in a run folder (<run>/weights/last.pt): --resume continues the run it "
        f"belongs to; put it back in its run folder's weights/, or start a new run from it with "
        f"--weights {lone}"
    )
    assert cli("train", "--resume", last).code == 0  # epoch 2: the run is finished
    r = cli("train", "--resume", last)
    assert r.err.strip() == (
        f"error: {last} finished all 2 epochs; nothing to resume (to train more: optkit train --weights "
        f"{last} --epochs N)"
    )


def test_the_trainers_errors_carry_fields():
    from optkit.errors import ConfigError
    from optkit.train.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig(model="test-tiny", epochs=0).validate()
    assert (info.value.field, str(info.value)) == (
        "epochs",
        "epochs must be an integer in [1, 100000], got 0",
    )
    with pytest.raises(ConfigError) as info:
        TrainConfig(weights="w.pt", model_options={"act": "relu"}).validate()
    assert str(info.value) == "model_options apply to model; a checkpoint keeps its own"


def test_options_named_words_fields_and_keeps_the_errors_kind_and_facts():
    from optkit.errors import CheckpointError
    from optkit.limits import FieldError, FieldsError, options_named

    class Moved(FieldsError, CheckpointError):
        pass

    flags = {"data": "--data", "amount": "--amount"}
    with pytest.raises(CheckpointError) as info, options_named(flags):
        raise Moved("{path} is gone; pass {data} {{NEW}}", ["data"], path="/d/{x}")
    assert type(info.value) is Moved and info.value.values == {"path": "/d/{x}"}
    assert str(info.value) == "/d/{x} is gone; pass --data {NEW}"  # a value's braces are not a template
    with pytest.raises(FieldError) as info, options_named(flags):
        raise FieldError("amount", "must be in [0, 1), got 1.0")
    assert str(info.value) == "--amount must be in [0, 1), got 1.0"
    with pytest.raises(FieldError) as info, options_named(flags):  # a field the flow has no flag for
        raise FieldError("scope", "must be global or layer")
    assert str(info.value) == "scope must be global or layer"
