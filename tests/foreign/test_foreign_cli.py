"""Foreign checkpoints (YOLOv5 / Ultralytics layout) through every command: refused without --trust
before anything is unpickled; with --trust (+ --code-dir) processed, and written back in their layout."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from foreign_helpers import (
    EXTRA_KEYS,
    IMGSZ,
    NAMES,
    detector,
    purge_family,
    ultralytics_file,
)

TRAINING_KEYS = ("ema", "optimizer", "best_fitness", "updates", "scaler", "stopper")


def load_output(path, code_dir):
    """What the user's own tools do: torch.load(weights_only=False) with their code importable."""
    purge_family()
    sys.path.insert(0, str(code_dir))
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    finally:
        sys.path.remove(str(code_dir))


def flat(out) -> list[torch.Tensor]:
    return [t for item in out for t in flat(item)] if isinstance(out, (list, tuple)) else [out]


def max_rel(a, b) -> float:
    """max |a - b| / max |a| over all output tensors."""
    a, b = flat(a), flat(b)
    assert [t.shape for t in a] == [t.shape for t in b]
    diff = max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b, strict=True))
    return diff / max(x.double().abs().max().item() for x in a)


def run_float(module, x):
    with torch.no_grad():
        return module.float().eval()(x)


def assert_layout(out: dict, original: dict) -> None:
    """Every original key is kept; training state dropped like Ultralytics' strip; extras untouched."""
    assert set(original) <= set(out)
    assert set(out) - set(original) <= {"optkit_lineage"}
    for key in EXTRA_KEYS:
        assert out[key] == original[key], key
    assert out["train_args"] == original["train_args"]
    for key in TRAINING_KEYS:
        assert out[key] is None, key
    assert out["epoch"] == -1
    assert next(out["model"].parameters()).dtype == torch.float16  # the file's own precision


def _one_line(r, *fragments):
    assert r.code == 1, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def last(tmp_path, code_dir):
    return ultralytics_file(detector(code_dir, seed=1), tmp_path / "last.pt", "last")


TRUST = ("--trust", "--code-dir")


def trusted(code_dir):
    return (*TRUST[:1], "--code-dir", str(code_dir))


# --- refused without --trust ------------------------------------------------------------------------

COMMANDS = {
    "info": lambda p, d: ("info", p),
    "fuse": lambda p, d: ("fuse", p),
    "prune": lambda p, d: ("prune", p, "--amount", "0.3"),
    "prune-structured": lambda p, d: ("prune", p, "--structured", "--amount", "0.3"),
    "strip": lambda p, d: ("strip", p),
    "profile": lambda p, d: ("profile", p, "--runs", "1", "--warmup", "0"),
    "export": lambda p, d: ("export", p),
    "val": lambda p, d: ("val", p, "--data", d),
}


class _OpensMarker:
    """Unpickling this calls open(marker, "w"): the file appears if anything from the pickle runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_refused_without_trust_before_unpickling(cli, tmp_path, code_dir, tiny_data, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    import_marker = tmp_path / "imported.txt"  # written when the family's package is imported
    monkeypatch.setenv("YOLO_LIKE_IMPORT_MARKER", str(import_marker))
    path = ultralytics_file(detector(code_dir), tmp_path / "best.pt", "best")
    import_marker.unlink()  # building the model imported the package; start clean
    opens_marker = tmp_path / "opened.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _OpensMarker(opens_marker), "epoch": 3}, evil)
    before = {p: p.read_bytes() for p in (path, evil)}
    files_before = set(tmp_path.iterdir())

    for target in (path, evil):
        r = cli(*COMMANDS[command](target, tiny_data), "--code-dir", code_dir)  # --code-dir alone: no
        _one_line(r, "pickled Python objects", "--trust")
    assert not import_marker.exists() and not opens_marker.exists()
    assert set(tmp_path.iterdir()) == files_before  # no output written
    assert all(p.read_bytes() == data for p, data in before.items())  # inputs untouched


def test_trust_runs_the_code_and_refuses_hostile_pickles(cli, tmp_path, code_dir, monkeypatch):
    """The counterpart of the test above: with --trust the import does happen (so that test can fail),
    and a pickle calling open/os.system is refused even then."""
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("YOLO_LIKE_IMPORT_MARKER", str(marker))
    path = ultralytics_file(detector(code_dir), tmp_path / "best.pt", "best")
    marker.unlink()
    assert cli("info", path, *trusted(code_dir), "--json").code == 0
    assert marker.exists()

    evil = tmp_path / "evil.pt"
    torch.save({"model": _OpensMarker(tmp_path / "opened.txt"), "epoch": 3}, evil)
    _one_line(cli("info", evil, "--trust"), "refused even with --trust", "open")
    assert not (tmp_path / "opened.txt").exists()


def test_missing_code_names_code_dir(cli, best, tmp_path):
    _one_line(cli("info", best, "--trust"), "yolo_like", "--code-dir")
    _one_line(cli("info", best, "--trust", "--code-dir", tmp_path / "nope"), "--code-dir", "no such folder")


# --- info ---------------------------------------------------------------------------------------------


def test_info(cli, best, last, code_dir):
    d = cli("info", best, *trusted(code_dir), "--json").json()
    assert d["format"] == "foreign" and d["module_key"] == "ema" and d["task"] == "detect"
    assert d["names"] == NAMES and d["imgsz"] == IMGSZ and d["stride"] == 32 and d["precision"] == "float16"
    assert d["params"] == sum(p.numel() for p in detector_params(code_dir))
    assert set(EXTRA_KEYS) <= set(d["keys"]) and d["epoch"] == 5
    d = cli("info", last, *trusted(code_dir), "--json").json()
    assert d["module_key"] == "ema" and d["carries"]["model"] is False and d["carries"]["optimizer"] is True


def detector_params(code_dir):
    return list(detector(code_dir).parameters())


# --- fuse ---------------------------------------------------------------------------------------------


def test_fuse_keeps_layout_and_outputs(cli, best, tmp_path, code_dir):
    original = load_output(best, code_dir)
    r = cli("fuse", best, *trusted(code_dir), "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["max_rel"] < 1e-4 and len(d["fused"]) == 30 and not d["bn_left"]
    out = load_output(tmp_path / "best-fused.pt", code_dir)
    assert_layout(out, original)
    assert out["optkit_lineage"][-1]["stage"] == "fuse"
    model = out["model"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    reference = run_float(original["ema"], x)
    assert max_rel(reference, run_float(model, x)) < 5e-3  # fp16 storage of the folded weights
    # the user's own tools call model.fuse() on every file they load: it must still work
    again = model.float().fuse()
    assert max_rel(reference, run_float(again, x)) < 5e-3
    assert best.read_bytes() == (tmp_path / "best.pt").read_bytes()


# --- prune --------------------------------------------------------------------------------------------


def _head_out_channels(model):
    return [m.out_channels for m in model.model[-1].m]


def test_prune_unstructured(cli, best, tmp_path, code_dir):
    original = load_output(best, code_dir)
    r = cli("prune", best, *trusted(code_dir), "--amount", "0.4", "-o", tmp_path / "p.pt", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["kept_output_layers"] == ["model.12"] and abs(d["achieved"] - 0.4) < 1e-3
    out = load_output(tmp_path / "p.pt", code_dir)
    assert_layout(out, original)
    weights = [
        m.weight
        for n, m in out["model"].named_modules()
        if isinstance(m, torch.nn.Conv2d) and not n.startswith("model.12")
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(zeros - 0.4) < 1e-3  # in the stored fp16 module
    head = [m.weight for m in out["model"].model[-1].m]
    assert all(int((w == 0).sum()) == 0 for w in head)


def test_prune_structured(cli, best, tmp_path, code_dir):
    original = load_output(best, code_dir)
    r = cli(
        "prune",
        best,
        *trusted(code_dir),
        "--structured",
        "--amount",
        "0.3",
        "-o",
        tmp_path / "s.pt",
        "--json",
    )
    assert r.code == 0, r.err
    d = r.json()
    assert d["params_after"] < 0.8 * d["params_before"] and d["gflops_after"] < d["gflops_before"]
    out = load_output(tmp_path / "s.pt", code_dir)
    assert_layout(out, original)
    model = out["model"]
    assert _head_out_channels(model) == _head_out_channels(original["ema"])  # box/class layout kept
    x = torch.randn(1, 3, IMGSZ, IMGSZ)
    assert [t.shape for t in flat(run_float(model, x))] == [
        t.shape for t in flat(run_float(original["ema"], x))
    ]


# --- strip --------------------------------------------------------------------------------------------


def test_strip_mid_training_last(cli, last, tmp_path, code_dir):
    original = load_output(last, code_dir)
    assert original["model"] is None
    r = cli("strip", last, *trusted(code_dir), "--json")
    assert r.code == 0, r.err
    assert "ema (became the model)" in r.json()["dropped"] and "optimizer" in r.json()["dropped"]
    out = load_output(tmp_path / "last-stripped.pt", code_dir)
    assert_layout(out, original)
    ema, model = original["ema"].state_dict(), out["model"].state_dict()
    assert ema.keys() == model.keys() and all(
        torch.equal(ema[k], model[k]) for k in ema
    )  # the EMA, bit-exact
    assert not any(p.requires_grad for p in out["model"].parameters())
    assert (tmp_path / "last-stripped.pt").stat().st_size < last.stat().st_size


# --- profile / export / val ---------------------------------------------------------------------------


def test_profile(cli, best, code_dir):
    r = cli("profile", best, *trusted(code_dir), "--runs", "2", "--warmup", "1", "--threads", "1", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["source_format"].startswith("foreign") and d["imgsz"] == IMGSZ and d["num_classes"] == 3
    assert d["params_unfused"] == sum(p.numel() for p in detector_params(code_dir))
    assert d["bn_folded"] == 30 and d["gflops"] > 0 and d["latency"]["median_ms"] > 0


def test_export_detector_one_output(cli, best, tmp_path, code_dir):
    """A foreign detector exports its detections alone ([B, 4 + nc, N], as Ultralytics' exporter does);
    its feature maps are not outputs."""
    import onnx

    r = cli("export", best, *trusted(code_dir), "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["checked"] and d["max_rel"] < 1e-4 and d["top1_agreement"] is None
    proto = onnx.load(str(tmp_path / "best.onnx"))
    assert [o.name for o in proto.graph.output] == ["output0"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["names"]) == NAMES and meta["stride"] == "32" and meta["task"] == "detect"


def test_val_classifier_and_export_preprocess(cli, trained_classifier, tiny_data, code_dir, tmp_path):
    r = cli("val", trained_classifier, "--data", tiny_data, *trusted(code_dir), "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["top1"] >= 0.9 and d["images"] == 18 and 0 < d["loss"] < 1.0  # loss of log-probabilities
    r = cli("export", trained_classifier, *trusted(code_dir), "--data", tiny_data, "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["val_top1_agreement"] == 1.0
    assert json.loads(d["metadata"]["preprocess"]) == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    r = cli(
        "val", tmp_path / "cls.onnx", "--data", tiny_data, "--json"
    )  # the ONNX file keeps its preprocessing
    assert r.code == 0 and r.json()["top1"] >= 0.9


def test_val_of_a_detector_on_class_folders_says_what_it_reads(cli, best, tiny_data, code_dir):
    _one_line(cli("val", best, "--data", tiny_data, *trusted(code_dir)), "data.yaml")
