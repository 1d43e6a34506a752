"""optkit profile, library side: FLOPs equal ultralytics-thop's for every zoo model, the ONNX graph count
equals the PyTorch count whatever the exporter folded, per-layer shares add up, and the timing, memory and
source-resolution helpers do what they say."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import onnx
import pytest
import thop
import torch
from torch import nn

from optkit.errors import CheckpointError, ConfigError, ModelError
from optkit.measure.latency import latency_stats, measure_latency, time_calls
from optkit.measure.memory import RssPeak, activation_bytes
from optkit.measure.onnx_flops import count_graph
from optkit.measure.per_layer import breakdown, ort_trace_layers
from optkit.measure.profile import flops_note
from optkit.measure.profile_torch import TorchTarget
from optkit.models import count_params, create_model, list_models
from optkit.workflows.profile import open_onnx_target, parse_batch_sizes, resolve_source

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, two spinning OpenMP threads per test slow everything down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def thop_gflops(model: nn.Module, imgsz: int, batch: int = 1) -> float:
    """ultralytics-thop called directly: 2 x MACs / 1e9."""
    x = torch.zeros(batch, 3, imgsz, imgsz)
    macs, _ = thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)
    return 2 * macs / 1e9


def export(model: nn.Module, path, imgsz: int = 32, fold: bool = True, slim: bool = False):
    """The legacy exporter, as `optkit export` will call it; fold=False keeps BatchNormalization nodes."""
    torch.onnx.export(
        model.eval(),
        torch.zeros(1, 3, imgsz, imgsz),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=fold,
    )
    if slim:  # onnxslim merges equal constants (the zero biases of a fresh model) into one initializer
        import onnxslim

        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    return path


# -- FLOPs and params --------------------------------------------------------------------------------


@pytest.mark.parametrize("imgsz", [224, pytest.param(640, marks=pytest.mark.slow)], ids=lambda s: f"imgsz{s}")
@pytest.mark.parametrize("name", list_models())
def test_zoo_flops_equal_thop_and_flop_counter_agrees(name, imgsz):
    target = TorchTarget(create_model(name, num_classes=1000), CPU)
    counts = target.counts(imgsz, 1)
    assert target.bn_folded > 0
    # profiled in inference form (BN folded) and as built: both are thop's own figures
    assert counts["gflops"] == pytest.approx(thop_gflops(target.model, imgsz), rel=1e-12)
    assert counts["gflops_unfused"] == pytest.approx(thop_gflops(target.unfused, imgsz), rel=1e-12)
    assert counts["gflops"] < counts["gflops_unfused"]  # folded BN costs nothing
    assert counts["params"] == count_params(target.model) < counts["params_unfused"]
    check = counts["gflops_check"]
    assert check is not None
    within = abs(check - counts["gflops"]) / counts["gflops"] <= 0.02
    note = flops_note(counts["gflops"], check, "ultralytics-thop")
    assert within and note is None or not within and f"{check:.4g}" in note


def test_flops_note_shows_both_counts_or_says_unavailable():
    assert flops_note(1.0, 1.015, "ultralytics-thop") is None
    note = flops_note(1.0, 1.5, "ultralytics-thop")
    assert "1 GFLOPs" in note and "1.5" in note and "33.3%" in note
    assert "unavailable" in flops_note(1.0, None, "ultralytics-thop")
    assert "could not count" in flops_note(None, 1.0, "ultralytics-thop")
    assert flops_note(1.0, None, "onnx-graph") is None


def test_failed_counter_is_none_not_zero(monkeypatch):
    monkeypatch.setattr(thop, "profile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    counts = TorchTarget(create_model("test-tiny"), CPU).counts(32, 1)
    assert counts["gflops"] is None and counts["gflops_unfused"] is None
    assert counts["gflops_check"] > 0  # the other counter still answers


@pytest.mark.parametrize("variant", ["folded", "bn-kept", "onnxslim"])
@pytest.mark.parametrize("name", ["test-tiny", "test-resnet", "test-concat"])
def test_onnx_graph_count_equals_pytorch(tmp_path, name, variant):
    model = create_model(name, num_classes=7).eval()
    path = export(model, tmp_path / "m.onnx", fold=variant != "bn-kept", slim=variant == "onnxslim")
    torch_counts = TorchTarget(model, CPU).counts(64, 2)
    graph = count_graph(onnx.load(str(path)), [2, 3, 64, 64])
    assert graph.problem is None
    assert graph.params == torch_counts["params"]
    assert graph.gflops == pytest.approx(torch_counts["gflops"], rel=1e-12)
    if variant == "bn-kept":
        assert graph.bn_folded == TorchTarget(model, CPU).bn_folded  # every BN node counted as folded


class Ops(nn.Module):
    """One of each layer thop has a non-trivial rule for, in shapes that exercise the rules' corners."""

    def __init__(self, include_pad: bool, ceil: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, 2, groups=2)
        self.bn2 = nn.BatchNorm2d(4)  # folds into the transposed conv
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=ceil, count_include_pad=include_pad)
        self.resize = nn.Upsample(scale_factor=2, mode="bilinear")
        self.dw = nn.Conv2d(4, 4, 3, 1, 1, groups=4)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 6)
        self.sm = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.bn2(self.up(self.act(self.bn(self.conv(x)))))
        x = self.dw(self.resize(self.pool(x)))
        return self.sm(self.fc(self.ln(self.gap(x).flatten(1))))


@pytest.mark.parametrize("include_pad, ceil, fold", [(True, False, True), (False, True, False)])
def test_onnx_rules_match_thop_beyond_the_zoo(tmp_path, include_pad, ceil, fold):
    torch.manual_seed(0)
    model = Ops(include_pad, ceil).eval()
    for bn in (model.bn, model.bn2):  # non-trivial statistics, so nothing folds away as zeros
        bn.running_mean.normal_()
        bn.bias.data.normal_()
    path = tmp_path / "ops.onnx"
    torch.onnx.export(
        model, torch.zeros(1, 3, 33, 33), str(path), dynamo=False, opset_version=17, do_constant_folding=fold
    )
    target = TorchTarget(model, CPU)
    # without constant folding the Resize sizes come from Shape ops: sized by the ONNX Runtime probe
    graph = count_graph(onnx.load(str(path)), [2, 3, 33, 33])
    assert graph.problem is None
    assert graph.macs == thop_gflops(target.model, 33, batch=2) * 1e9 / 2
    assert graph.params == count_params(target.model)


def test_onnx_count_without_shapes_is_unavailable(tmp_path):
    path = export(create_model("test-tiny"), tmp_path / "m.onnx")
    graph = count_graph(onnx.load(str(path)))  # batch left dynamic: no shapes to count with
    assert graph.macs is None and graph.gflops is None and "could not be inferred" in graph.problem
    assert graph.params == count_params(TorchTarget(create_model("test-tiny"), CPU).model)


# -- per layer -------------------------------------------------------------------------------------


def test_torch_per_layer_shares_sum_to_one_and_flops_to_total():
    target = TorchTarget(create_model("test-tiny"), CPU, threads=1)
    counts = target.counts(32, 2)
    total_ms, layers = target.per_layer(32, 2, 1, 3, counts["layer_gflops"])
    section = breakdown(layers, total_ms, top=5)
    shares = sum(r["share"] for r in section["rows"]) + section["others_share"] + section["outside_share"]
    assert shares == pytest.approx(1.0, abs=1e-9)
    assert len(section["rows"]) == 5 and section["layers"] == len(layers)
    assert [r["ms"] for r in section["rows"]] == sorted((r["ms"] for r in section["rows"]), reverse=True)
    assert all(0 <= r["share"] <= 1 and r["calls"] == 1 for r in section["rows"])
    everything = breakdown(layers, total_ms, top=1000)["rows"]
    assert sum(r["gflops"] or 0 for r in everything) == pytest.approx(counts["gflops"], rel=1e-9)


def test_onnx_per_node_shares_sum_to_one(tmp_path):
    target = open_onnx_target(export(create_model("test-tiny"), tmp_path / "m.onnx"), threads=1)
    counts = target.counts(32, 1)
    total_ms, layers = target.per_layer(32, 1, 1, 3, counts["layer_gflops"])
    section = breakdown(layers, total_ms, top=3)
    shares = sum(r["share"] for r in section["rows"]) + section["others_share"] + section["outside_share"]
    assert shares == pytest.approx(1.0, abs=1e-9) and total_ms > 0
    assert {layer.kind for layer in layers} & {"Conv", "FusedConv"}
    matched = sum(layer.gflops or 0 for layer in layers)
    assert 0.9 * counts["gflops"] <= matched <= counts["gflops"] * (1 + 1e-9)  # FLOPs found their nodes


def test_ort_trace_drops_warmup_runs():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, ts, dur):
        return {
            "cat": "Node",
            "name": f"{name}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": "Conv"},
        }

    events = [run(0, 1000), node("a", 10, 900), run(2000, 100), node("a", 2010, 40), node("b", 2050, 30)]
    events += [run(3000, 100), node("a", 3010, 60), node("b", 3070, 10)]
    total_ms, layers = ort_trace_layers(events, skip_runs=1)
    assert total_ms == pytest.approx(0.1)  # 100 us
    times = {layer.name: layer.ms for layer in layers}
    assert times == pytest.approx({"a": 0.05, "b": 0.02})


# -- timing and memory -----------------------------------------------------------------------------


def test_time_calls_and_stats():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, runs=5)
    assert len(calls) == 8 and len(times) == 5 and all(t >= 0 for t in times)
    stats = latency_stats([4.0, 1.0, 3.0, 2.0, 10.0], batch=8)
    assert stats["median_ms"] == 3.0 and stats["p90_ms"] == 10.0 and stats["min_ms"] == 1.0
    assert stats["mean_ms"] == 4.0 and stats["img_per_s"] == pytest.approx(8 / 0.003)


def test_backward_timing_leaves_the_model_as_it_was():
    model = create_model("test-tiny").train()
    threads = torch.get_num_threads()
    result = measure_latency(model, 32, batch=2, warmup=1, runs=2, threads=1, backward=True)
    assert result["median_ms"] > 0 and result["runs"] == 2 and result["img_per_s"] > 0
    assert model.training and torch.get_num_threads() == threads
    assert all(p.grad is None for p in model.parameters())


def test_activation_bytes_counts_new_tensors_only():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Identity())
    x = torch.zeros(2, 3, 8, 8)
    assert activation_bytes(model, x) == 2 * 4 * 8 * 8 * 4  # the conv output; in-place ReLU and views add 0
    assert not any(m._forward_hooks for m in model.modules())


def test_rss_peak_sees_a_short_lived_allocation():
    with RssPeak() as rss:
        block = np.ones(48 << 20, dtype=np.uint8)  # 48 MiB, touched
        time.sleep(0.05)
        del block
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc on this platform")
    assert rss.growth_bytes >= 40 << 20


# -- what gets profiled ------------------------------------------------------------------------------


def test_default_source_is_newest_best_else_the_zoo_default(tmp_path):
    source = resolve_source(None, tmp_path)
    assert (source.kind, source.ref) == (
        "zoo",
        "yolo-cls-n",
    ) and "no runs/**/weights/best.pt" in source.reason
    for i, run in enumerate(["exp", "exp2", "old"]):
        best = tmp_path / "runs" / "train" / run / "weights" / "best.pt"
        best.parent.mkdir(parents=True)
        best.write_bytes(b"x")
        os.utime(best, (1_000_000 + i * 10, 1_000_000 + (-100 if run == "old" else i * 10)))
    source = resolve_source(None, tmp_path)
    assert source.kind == "checkpoint" and source.ref == "runs/train/exp2/weights/best.pt"
    assert "newest" in source.reason


def test_named_sources(tmp_path):
    assert resolve_source("resnet18", tmp_path).kind == "zoo"
    assert resolve_source("x/model.onnx", tmp_path).kind == "onnx"
    assert resolve_source("missing.pt", tmp_path).kind == "checkpoint"  # loading says it is missing
    with pytest.raises(ModelError, match="known models: mobilenet-v2, resnet18, yolo-cls-n, yolo-cls-s"):
        resolve_source("resnet19", tmp_path)
    with pytest.raises(CheckpointError, match="is a directory"):
        resolve_source(str(tmp_path), tmp_path)


def test_parse_batch_sizes():
    assert parse_batch_sizes("1,8, 32,8") == [1, 8, 32]
    for bad in ("1,x", "0", "", "1,,2", "-1", "2000"):
        with pytest.raises(ConfigError, match="--batch-sizes must be"):
            parse_batch_sizes(bad)
