"""export: ONNX files that ONNX Runtime runs like the PyTorch model, with metadata, written atomically."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from optkit.checkpoint import (
    build_model,
    checkpoint_from_model,
    derived_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from optkit.models import create_model, get_spec, list_models
from optkit.models.weight_init import randomize_bn
from optkit.onnxrt import OrtModel, create_session, read_metadata
from optkit.stages import export as export_module
from optkit.stages.export import ExportConfig, ExportError, export_checkpoint, export_onnx

ALL_MODELS = list_models(include_test=True)
CLASSIFIERS = [n for n in ALL_MODELS if get_spec(n).task == "classify"]  # (N, classes) logits
BIG_MODELS = set(list_models())
NAMES = ["a", "b", "c", "d", "e"]
TOL = 1e-4  # max |Δ| relative to max |output|, the default


def _save(model: nn.Module, path, imgsz: int = 32, names=NAMES):
    return save_checkpoint(checkpoint_from_model(model, names[: model.num_classes], imgsz), path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def _ort(path, x: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime on its own (not through the code under test's comparison)."""
    session = create_session(path, threads=1)
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(create_model("test-tiny", num_classes=3))
    path = _save(model, tmp_path / "m.pt")
    return load_checkpoint(path), path


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_zoo_export_parity(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(create_model(name, num_classes=5))
    imgsz = 32 if name in BIG_MODELS else 64  # pixels
    ckpt = checkpoint_from_model(model, NAMES, imgsz)
    report = export_checkpoint(ckpt, tmp_path / "m.onnx", ExportConfig(dynamic=True))
    assert [c.input for c in report.cases] == ["random"] * 3  # batch 1, batch 4, a second size
    assert all(0 <= c.max_rel <= TOL and c.top1_agreement == 1.0 for c in report.cases), report.cases
    assert report.simplified and report.nodes_after <= report.nodes_before
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # folded at export
    x = torch.randn(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
    out = _ort(tmp_path / "m.onnx", x)
    assert out.shape == (2, 5) and _rel(ref, out) <= TOL, name
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no external data, no temp file


def test_dynamic_export_runs_at_any_batch_and_size(tiny_ckpt, tmp_path):
    ckpt, src = tiny_ckpt
    export_checkpoint(ckpt, tmp_path / "d.onnx", ExportConfig(dynamic=True), src)
    model = build_model(ckpt)
    dims = [
        d.dim_param or d.dim_value
        for d in onnx.load(tmp_path / "d.onnx").graph.input[0].type.tensor_type.shape.dim
    ]
    assert dims == ["batch", 3, "height", "width"]
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 3, 32, 32), (4, 3, 32, 32), (4, 3, 96, 64)]:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            assert _rel(model(x), _ort(tmp_path / "d.onnx", x)) <= TOL, shape


def test_static_export_fixes_the_shape_and_ort_model_chunks(tiny_ckpt, tmp_path):
    ckpt, src = tiny_ckpt
    report = export_checkpoint(ckpt, tmp_path / "s.onnx", ExportConfig(batch=2, imgsz=64), src)
    assert report.input_shape == [2, 3, 64, 64] and len(report.cases) == 1
    x = torch.randn(5, 3, 64, 64)  # not a multiple of the graph's batch of 2
    with torch.no_grad():
        ref = build_model(ckpt)(x)
    ort_model = OrtModel(tmp_path / "s.onnx")
    assert ort_model.fixed_batch == 2 and ort_model.fixed_size() == (64, 64)
    assert ort_model.eval() is ort_model and ort_model.to("cpu") is ort_model
    assert _rel(ref, ort_model(x)) <= TOL
    with pytest.raises(Exception, match="images"):
        _ort(tmp_path / "s.onnx", x)  # ONNX Runtime itself refuses a batch of 5


def test_metadata_round_trip(tiny_ckpt, tmp_path):
    ckpt, src = tiny_ckpt
    export_checkpoint(ckpt, tmp_path / "m.onnx", ExportConfig(), src)
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert props["names"] == '["a", "b", "c"]' and props["imgsz"] == "32"
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["names"] == ["a", "b", "c"] and meta["imgsz"] == 32 and meta["stride"] == 32
    assert meta["task"] == "classify" and meta["arch"] == "test-tiny"
    from optkit import __version__

    assert meta["optkit_version"] == __version__
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["preprocess"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class _BatchDependent(nn.Module):
    """Python control flow on the batch size: the trace keeps only the branch taken at batch 1, so the
    graph is wrong at batch 4: a genuine export mismatch the parity check must catch."""

    stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.conv(x)).flatten(1)
        return y if x.shape[0] == 1 else y * 2 + 1


def test_failing_parity_writes_nothing(tmp_path):
    target = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError, match=r"random 4x3x32x32: max \|Δ\|") as e:
        export_onnx(_BatchDependent(), target, ExportConfig(imgsz=32, dynamic=True))
    assert "\n" not in str(e.value) and "nothing written" in str(e.value)
    assert not target.exists() and not (tmp_path / "out").exists()  # the folder made for it is gone too
    export_onnx(_BatchDependent(), target, ExportConfig(imgsz=32))  # static batch 1: it is right
    assert target.exists()


def test_simplify_failure_keeps_the_plain_graph(tiny_ckpt, tmp_path, monkeypatch):
    import onnxslim

    def broken(*args, **kwargs):
        raise RuntimeError("slim exploded")

    monkeypatch.setattr(onnxslim, "slim", broken)
    ckpt, src = tiny_ckpt
    report = export_checkpoint(ckpt, tmp_path / "m.onnx", ExportConfig(), src)
    assert not report.simplified and "slim exploded" in report.simplify_error
    assert report.nodes_after == report.nodes_before and report.worst().max_rel <= TOL
    assert len(onnx.load(tmp_path / "m.onnx").graph.node) == report.nodes_before


def test_too_big_is_refused(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "MAX_BYTES", 1000)
    ckpt, src = tiny_ckpt
    with pytest.raises(ExportError, match="at most 2 GB"):
        export_checkpoint(ckpt, tmp_path / "m.onnx", ExportConfig(), src)
    assert not (tmp_path / "m.onnx").exists()


def test_half_graph(tiny_ckpt, tmp_path, monkeypatch):
    """The fp16 path, traced on CPU here (the command itself requires CUDA for --half)."""
    monkeypatch.setattr(export_module, "half_device", lambda: torch.device("cpu"))
    ckpt, src = tiny_ckpt
    report = export_checkpoint(ckpt, tmp_path / "h.onnx", ExportConfig(half=True), src)
    assert report.atol == 1e-2 and report.worst().max_rel <= 1e-2
    graph = onnx.load(tmp_path / "h.onnx").graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def _stage_checkpoints(ckpt):
    """fused, structured-pruned, unstructured-pruned and fp16-stripped versions of `ckpt`."""
    from optkit.stages.fuse import FuseConfig, fuse
    from optkit.stages.prune import PruneConfig, prune_unstructured, sparsity_transform
    from optkit.stages.prune_structured import StructuredPruneConfig, prune_structured
    from optkit.stages.strip import StripConfig, strip

    model = build_model(ckpt)
    fused, report = fuse(model, FuseConfig(imgsz=32))
    pruned_s, entry = prune_structured(model, StructuredPruneConfig(amount=0.5, round_to=4, imgsz=32))
    pruned_u, sparsity = prune_unstructured(model, PruneConfig(amount=0.5))
    return {
        "fused": derived_checkpoint(ckpt, fused, {"kind": "fuse", "fused": report.fused}),
        "pruned-structured": derived_checkpoint(ckpt, pruned_s, entry),
        "pruned-unstructured": derived_checkpoint(ckpt, pruned_u, sparsity_transform(sparsity)),
        "stripped-half": strip(ckpt, StripConfig(half=True)),
    }


def test_stage_checkpoints_export(tiny_ckpt, tmp_path):
    ckpt, _ = tiny_ckpt
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    derived = _stage_checkpoints(ckpt)
    for name, stage_ckpt in derived.items():
        src = save_checkpoint(stage_ckpt, tmp_path / f"{name}.pt")
        reloaded = load_checkpoint(src)
        report = export_checkpoint(reloaded, tmp_path / f"{name}.onnx", ExportConfig(dynamic=True), src)
        assert report.worst().max_rel <= TOL, name
        with torch.no_grad():
            ref = build_model(reloaded)(x)
        assert _rel(ref, _ort(tmp_path / f"{name}.onnx", x)) <= TOL, name
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {f"{n}.{ext}" for n in derived for ext in ("pt", "onnx")} | {"m.pt"}


def test_parity_on_real_images(tiny_ckpt, tiny_data, tmp_path):
    from optkit.stages.export import preprocess_of
    from optkit.tasks import get_task
    from optkit.workflows.export import parity_images

    ckpt, src = tiny_ckpt
    ckpt.names = ["blue", "green", "red"]
    task = get_task(ckpt.task)
    images = parity_images(str(tiny_data), task, ckpt.names, 32, preprocess_of(ckpt), limit=10, batch=4)
    report = export_checkpoint(ckpt, tmp_path / "m.onnx", ExportConfig(), src, images=images)
    val = report.cases[-1]
    assert val.input == "val" and val.shape == [10, 3, 32, 32] and val.top1_agreement == 1.0
    assert val.max_rel <= TOL
    assert report.as_dict()["val_images"] == 10 and np.isfinite(report.as_dict()["max_abs"])
