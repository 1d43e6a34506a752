"""`optkit profile` through the real entry point: the --json schema, an ONNX export and its .pt agreeing
on params and FLOPs, per-layer / sweep / backward / autobatch sections, the default source, and every
a bad-input row (exit code, one line on stderr, no traceback)."""

from __future__ import annotations

import re
import shutil

import onnx
import pytest
import torch

from optkit.report.profile import JSON_KEYS

QUICK = ("--runs", "2", "--warmup", "1", "--threads", "1")  # tiny models, few runs, one thread


@pytest.fixture(autouse=True)
def _one_thread():
    """Counting and per-layer passes use torch's current thread count: keep it at one on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_pair(tmp_path, name: str = "test-tiny", imgsz: int = 32, dynamic: str = "batch"):
    """An optkit checkpoint and its ONNX export (legacy exporter: BatchNorm folded into the convs);
    dynamic: the ONNX input axes left free, "none", "batch" or "all" (batch, height, width)."""
    from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    for m in model.modules():  # trained-looking BN statistics, so no folded bias is all zeros
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.normal_(0, 0.1)
    pt = save_checkpoint(checkpoint_from_model(model, ["a", "b", "c"], imgsz), tmp_path / f"{name}.pt")
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        build_model(load_checkpoint(pt)),
        torch.zeros(1, 3, imgsz, imgsz),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={
            "none": None,
            "batch": {"images": {0: "batch"}, "logits": {0: "batch"}},
            "all": {"images": {0: "batch", 2: "h", 3: "w"}, "logits": {0: "batch"}},
        }[dynamic],
    )
    return pt, path


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def profile_json(cli, *args) -> dict:
    r = cli("profile", *args, *QUICK, "--json")
    assert r.code == 0, r.err
    return r.json()


# -- the schema ------------------------------------------------------------------------------------

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
TOP_LEVEL = {
    "optkit_version": str,
    "source": str,
    "source_kind": str,
    "source_format": (str, type(None)),
    "source_reason": str,
    "arch": (str, type(None)),
    "backend": str,
    "device": str,
    "threads": (int, type(None)),
    "num_classes": (int, type(None)),
    "imgsz": int,
    "batch_size": int,
    "input_shape": list,
    "bn_folded": (int, type(None)),
    "params": (int, type(None)),
    "params_unfused": (int, type(None)),
    "gflops": OPTIONAL_NUMBER,
    "gflops_counter": str,
    "gflops_check": OPTIONAL_NUMBER,
    "gflops_unfused": OPTIONAL_NUMBER,
    "flops_note": (str, type(None)),
    "latency": dict,
    "backward": (dict, type(None)),
    "memory": dict,
    "per_layer": (dict, type(None)),
    "sweep": (list, type(None)),
    "autobatch": (int, type(None)),
    "autobatch_note": (str, type(None)),
    "notes": list,
}
LATENCY = {"warmup", "runs", "median_ms", "p90_ms", "min_ms", "mean_ms", "img_per_s", "gflops_per_s"}
MEMORY = {"method", "cuda_peak_allocated_bytes", "rss_peak_growth_bytes", "activation_bytes"}
PER_LAYER = {"total_ms", "layers", "top", "rows", "others_ms", "others_share", "outside_ms", "outside_share"}
ROW = {"name", "type", "ms", "share", "calls", "gflops"}
SWEEP = {"batch_size", "median_ms", "p90_ms", "img_per_s", "gflops_per_s", *MEMORY - {"method"}}


def test_json_schema(cli, pair):
    pt, _ = pair
    d = profile_json(
        cli, pt, "--per-layer", "--top", "4", "--batch-sizes", "1,2", "--backward", "--autobatch"
    )
    assert set(d) == set(TOP_LEVEL) == set(JSON_KEYS)
    for key, types in TOP_LEVEL.items():
        assert isinstance(d[key], types), (key, d[key])
    assert set(d["latency"]) == LATENCY and all(isinstance(d["latency"][k], NUMBER) for k in LATENCY)
    assert set(d["backward"]) == LATENCY - {"gflops_per_s"}
    assert set(d["memory"]) == MEMORY and isinstance(d["memory"]["activation_bytes"], int)
    assert set(d["per_layer"]) == PER_LAYER and len(d["per_layer"]["rows"]) == 4
    assert all(set(row) == ROW for row in d["per_layer"]["rows"])
    assert all(set(row) == SWEEP for row in d["sweep"])
    assert d["input_shape"] == [1, 3, 32, 32] and d["source_kind"] == "checkpoint"
    assert (d["backend"], d["device"], d["threads"]) == ("pytorch", "cpu", 1)


# -- ONNX and its source agree --------------------------------------------------------------------


@pytest.mark.parametrize("name, imgsz", [("test-tiny", 64), ("yolo-cls-n", 64)])
def test_onnx_and_its_pt_report_the_same_params_and_flops(cli, tmp_path, name, imgsz):
    pt, path = make_pair(tmp_path, name, imgsz=32, dynamic="all")
    a = profile_json(cli, pt, "--imgsz", str(imgsz), "--batch-size", "2")
    b = profile_json(cli, path, "--imgsz", str(imgsz), "--batch-size", "2")
    assert (a["backend"], b["backend"]) == ("pytorch", "onnxruntime")
    assert a["params"] == b["params"] and a["params"] > 0
    assert a["gflops"] == pytest.approx(b["gflops"], rel=1e-12) and a["gflops"] > 0
    assert a["params_unfused"] > a["params"]  # the checkpoint as built still has its BatchNorms
    assert b["num_classes"] == a["num_classes"] == 3 and b["input_shape"] == a["input_shape"] == [
        2,
        3,
        64,
        64,
    ]
    assert (
        b["params_unfused"] is None and b["gflops_check"] is None and b["memory"]["activation_bytes"] is None
    )


def test_onnx_metadata_gives_classes_and_imgsz(cli, tmp_path):
    _, path = make_pair(tmp_path, dynamic="all")
    model = onnx.load(str(path))
    for key, value in {"names": '["x", "y", "z", "w"]', "imgsz": "64", "arch": "test-tiny"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    d = profile_json(cli, path)
    assert (d["num_classes"], d["imgsz"], d["arch"]) == (4, 64, "test-tiny")


def test_onnx_fixed_input_size(cli, tmp_path):
    _, path = make_pair(tmp_path, dynamic="none")
    assert profile_json(cli, path)["imgsz"] == 32
    r = cli("profile", path, "--imgsz", "64", *QUICK)
    assert r.code == 1 and "32x32 inputs only" in r.err
    r = cli("profile", path, "--batch-sizes", "1,2", *QUICK)
    assert r.code == 1 and "fixed batch size of 1" in r.err


# -- sections --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_per_layer_shares_sum_to_one(cli, pair, kind):
    d = profile_json(cli, pair[0] if kind == "pt" else pair[1], "--per-layer", "--top", "3")
    p = d["per_layer"]
    total = sum(r["share"] for r in p["rows"]) + p["others_share"] + p["outside_share"]
    assert total == pytest.approx(1.0, abs=1e-6)
    assert len(p["rows"]) == 3 and p["layers"] > 3
    assert sum(r["ms"] for r in p["rows"]) + p["others_ms"] + p["outside_ms"] == pytest.approx(p["total_ms"])


def test_sweep_has_one_row_per_batch_size(cli, pair):
    d = profile_json(cli, pair[0], "--batch-sizes", "1,3,2")
    assert [row["batch_size"] for row in d["sweep"]] == [1, 3, 2]
    assert all(row["median_ms"] > 0 and row["img_per_s"] > 0 for row in d["sweep"])
    acts = {row["batch_size"]: row["activation_bytes"] for row in d["sweep"]}
    assert acts[3] == 3 * acts[1] and acts[2] == 2 * acts[1]  # activations scale with the batch
    assert d["sweep"][0]["median_ms"] == d["latency"]["median_ms"]  # batch 1 is the main measurement


def test_backward_adds_a_figure_for_pytorch_only(cli, pair):
    pt, path = pair
    assert profile_json(cli, pt)["backward"] is None
    d = profile_json(cli, pt, "--backward")
    assert d["backward"]["median_ms"] > 0 and d["backward"]["runs"] == 2
    d = profile_json(cli, path, "--backward")
    assert d["backward"] is None and any("--backward needs a PyTorch model" in n for n in d["notes"])


def test_autobatch_without_cuda_is_a_note(cli, pair):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for source in pair:
        d = profile_json(cli, source, "--autobatch")
        assert (
            d["autobatch"] is None
            and "autobatch needs" in d["autobatch_note"]
            and "CUDA" in d["autobatch_note"]
        )


def test_threads_are_restored(cli, pair):
    torch.set_num_threads(2)
    profile_json(cli, pair[0], "--per-layer", "--backward")
    assert torch.get_num_threads() == 2


def test_human_output_states_the_figures(cli, pair):
    pt, _ = pair
    expected = profile_json(cli, pt)
    r = cli("profile", pt, "--per-layer", "--batch-sizes", "1,2", *QUICK)
    assert r.code == 0, r.err
    params = re.search(r"params\W+([\d,]+)", r.out)
    assert params and int(params.group(1).replace(",", "")) == expected["params"]
    assert f"{expected['gflops']:.4g} per pass (ultralytics-thop)" in r.out
    for text in ("optkit checkpoint; named on the command line", "median", "img/s", "GFLOP/s achieved"):
        assert text in r.out
    assert "per layer" in r.out and "batch-size sweep" in r.out and "(outside any layer)" in r.out


def test_flop_counters_that_disagree_are_both_printed(cli, pair, monkeypatch):
    import optkit.measure.flops as flops

    monkeypatch.setattr(flops, "count_flops_check", lambda model, imgsz, batch=1: 1.5)
    r = cli("profile", pair[0], *QUICK)
    assert r.code == 0 and "torch FlopCounterMode 1.5" in r.out and "ultralytics-thop counts" in r.out


def test_zoo_model_by_name(cli):
    d = profile_json(cli, "test-tiny", "--imgsz", "64")
    assert (d["source_kind"], d["num_classes"], d["arch"]) == ("zoo", 1000, "test-tiny")
    assert "random weights" in d["source_reason"]


def test_default_source_newest_best_else_zoo_default(cli, tmp_path, monkeypatch, pair):
    monkeypatch.chdir(tmp_path)
    d = profile_json(cli, "--imgsz", "32")
    assert (d["source"], d["source_kind"]) == ("yolo-cls-n", "zoo") and "no model given" in d["source_reason"]
    best = tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    shutil.copy(pair[0], best)
    r = cli("profile", *QUICK)
    assert r.code == 0, r.err
    assert "runs/train/exp/weights/best.pt" in r.out and "newest runs/**/weights/best.pt" in r.out


# -- bad input (docs/architecture.md, bad input) ---------------------------------------------------


def _assert_refused(r, code: int, fragment: str) -> None:
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and r.out == ""
    assert fragment in lines[0], lines[0]


def _bad(tmp_path, kind: str):
    path = {"garbage-onnx": "bad.onnx", "empty-onnx": "empty.onnx", "missing-onnx": "nope.onnx"}.get(
        kind, "bad.pt"
    )
    path = tmp_path / path
    if kind == "directory":
        path = tmp_path / "folder"
        path.mkdir()
    elif kind == "garbage-pt":
        path.write_bytes(b"hello world" * 20)
    elif kind == "garbage-onnx":
        path.write_bytes(b"\x08\x07" + b"garbage" * 30)
    elif kind == "empty-onnx":
        path.write_bytes(b"")
    elif kind == "foreign-pt":
        torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, path)  # a pickled module, as YOLOv5 saves
    return path


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("missing-pt", "no such file"),
        ("missing-onnx", "no such file"),
        ("directory", "is a directory"),
        ("garbage-pt", "not a PyTorch checkpoint"),
        ("garbage-onnx", "not a valid ONNX model"),
        ("empty-onnx", "empty"),
        ("foreign-pt", "pickled Python objects"),
    ],
)
def test_bad_files(cli, tmp_path, kind, fragment):
    _assert_refused(cli("profile", _bad(tmp_path, kind), *QUICK), 1, fragment)


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (("yolo-nope",), 1, "known models: mobilenet-v2, resnet18, yolo-cls-n, yolo-cls-s"),
        (("test-tiny", "--imgsz", "50"), 1, "not a multiple of the model's stride 32"),
        (("test-tiny", "--imgsz", "100000"), 1, "--imgsz must be a multiple of 32 between"),
        (("test-tiny", "--batch-size", "0"), 1, "--batch-size must be an integer in [1, 1024]"),
        (("test-tiny", "--batch-sizes", "1,x"), 1, "--batch-sizes must be comma-separated integers"),
        (("test-tiny", "--runs", "0"), 1, "--runs must be an integer in [1, "),
        (("test-tiny", "--warmup", "-1"), 1, "--warmup must be an integer in [0, "),
        (("test-tiny", "--top", "0"), 1, "--top must be"),
        (("test-tiny", "--fraction", "1.5"), 1, "--fraction must be in (0, 1]"),
        (("test-tiny", "--device", "0"), 1, "CUDA"),
        (("test-tiny", "--runs", "two"), 2, "Invalid value for '--runs'"),
    ],
    ids=[
        "unknown-model",
        "imgsz-stride",
        "imgsz-huge",
        "batch-0",
        "batch-sizes",
        "runs-0",
        "warmup",
        "top",
        "fraction",
        "cuda",
        "runs-type",
    ],
)
def test_bad_options(cli, args, code, fragment):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = [] if "--runs" in args or "--warmup" in args else ["--runs", "1", "--warmup", "0"]
    _assert_refused(cli("profile", *args, *base), code, fragment)


def test_bad_options_on_onnx(cli, pair, tmp_path):
    _, path = pair
    _assert_refused(cli("profile", path, "--imgsz", "64", *QUICK), 1, "32x32 inputs only")
    _, path = make_pair(tmp_path, dynamic="all")
    _assert_refused(cli("profile", path, "--imgsz", "50", *QUICK), 1, "stride 32")
    _assert_refused(cli("profile", path, *QUICK), 1, "give --imgsz")
    if not torch.cuda.is_available():
        _assert_refused(cli("profile", path, "--device", "0", *QUICK), 1, "CUDA")
