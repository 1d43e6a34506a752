"""`optkit benchmark`, `info` and `profile` for detectors (issue 14, part 10): a detector row shows mAP50-95
and mAP50; one table holds classifiers and detectors, each measured on the dataset its task reads (one
--data per task), its speed-up against the first artifact of its task; the plot has a panel per task;
`info` names a detector's figures; `profile` runs a detector at 640 px.

Timings here are tiny (--runs 1-2, --rounds 2) and never asserted: speed-ups are checked with fake timers.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model

DET_NAMES = ["rect", "ellipse"]
CLS_NAMES = ["blue", "green", "red"]
QUICK = ("--runs", "1", "--rounds", "2", "--warmup", "0")


@pytest.fixture(autouse=True)
def _tables_at_pipe_width(monkeypatch):
    """Whole table rows (pytest-xdist workers export COLUMNS=80, which optkit's console obeys)."""
    from optkit.report import console

    monkeypatch.delenv("COLUMNS", raising=False)
    console.out.cache_clear()
    yield
    console.out.cache_clear()


def write_yolo_data(root, n_train: int = 12, n_val: int = 6, seed: int = 0):
    """A tiny YOLO-format dataset (Pillow): 64x48 images with 1-2 red rectangles (class 0) or blue
    ellipses (class 1) on grey, every 6th image a background; returns its data.yaml."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            image = Image.new("RGB", (64, 48), tuple(int(v) for v in rng.integers(90, 160, 3)))
            draw, rows = ImageDraw.Draw(image), []
            for k in range(0 if i % 6 == 5 else int(rng.integers(1, 3))):
                cls, w, h = int(rng.integers(0, 2)), int(rng.integers(10, 20)), int(rng.integers(10, 20))
                x0, y0 = 32 * k + int(rng.integers(0, 32 - w + 1)), int(rng.integers(0, 48 - h + 1))
                shape = draw.rectangle if cls == 0 else draw.ellipse
                shape([x0, y0, x0 + w - 1, y0 + h - 1], fill=((220, 40, 40), (40, 70, 220))[cls])
                rows.append(
                    f"{cls} {(x0 + w / 2) / 64:.6f} {(y0 + h / 2) / 48:.6f} {w / 64:.6f} {h / 48:.6f}\n"
                )
            image.save(root / "images" / split / f"{i:03d}.png")
            if rows:
                (root / "labels" / split / f"{i:03d}.txt").write_text("".join(rows))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"train: images/train\nval: images/val\nnames: {DET_NAMES}\n")
    return yaml_path


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """test-det trained 1 epoch at 64 px on a tiny YOLO dataset, its best.pt exported to a dynamic
    .onnx (`optkit train`, `optkit export`), and a classifier checkpoint with its class-folder data."""
    from optkit.cli.app import main

    root = tmp_path_factory.mktemp("det")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTKIT_CACHE", str(root / "cache"))
        mp.chdir(root)
        data = write_yolo_data(root / "yolo")
        train = "--model test-det --epochs 1 --imgsz 64 --batch-size 6 --workers 0 --name det"
        assert main(["train", "--data", str(data), *train.split()]) == 0
        best = root / "runs/train/det/weights/best.pt"
        onnx = root / "det.onnx"
        assert main(["export", str(best), "-o", str(onnx), "--dynamic", "--no-simplify", "--json"]) == 0
    return {"data": data, "best": best, "onnx": onnx, **_classifier(root)}


def _classifier(root) -> dict:
    """An untrained test-tiny checkpoint at 32 px and a class-folder dataset of its 3 classes."""
    from image_folders import write_image_folder

    torch.manual_seed(0)
    classifier = create_model("test-tiny", num_classes=3).eval()
    cls_pt = save_checkpoint(checkpoint_from_model(classifier, CLS_NAMES, 32), root / "cls.pt")
    return {"cls_pt": cls_pt, "cls_data": write_image_folder(root / "colors", CLS_NAMES, per_class=8)}


def _det_checkpoint(path, imgsz: int = 64, **extra):
    torch.manual_seed(0)
    model = create_model("test-det", num_classes=2).eval()
    return save_checkpoint(checkpoint_from_model(model, DET_NAMES, imgsz, task="detect", **extra), path)


def _row(text: str, label: str) -> list[str]:
    """The cells of the table row of `label`."""
    line = next(line for line in text.splitlines() if line.startswith("│") and f" {label} " in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def _header(text: str) -> list[str]:
    """The table's column titles, a title wrapped over lines joined again ("top-1 / mAP50-95")."""
    lines = [line.strip("┃ ").split("┃") for line in text.splitlines() if line.startswith("┃")]
    return [" ".join(part.strip() for part in parts if part.strip()) for parts in zip(*lines, strict=True)]


# ---------------------------------------------------------------------------------------- detector only


@pytest.mark.slow
def test_detector_benchmark_pt_and_onnx(cli, bench_run, tmp_path):
    best, onnx, data = bench_run["best"], bench_run["onnx"], bench_run["data"]
    csv_path, plot = tmp_path / "b.csv", tmp_path / "b.png"
    args = ("--data", data, "--latency-imgsz", "128", *QUICK, "--csv", csv_path, "--plot", plot)
    r = cli("benchmark", best, onnx, *args, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert (out["imgsz"], out["latency_imgsz"], out["data"]) == (64, 128, [str(data)])
    assert list(out["tasks"]) == ["detect"] and out["tasks"]["detect"]["shown"] == ["map", "map50"]
    pt_row, onnx_row = out["rows"]
    assert [row["format"] for row in out["rows"]] == ["pytorch", "onnx"]
    for row in out["rows"]:
        assert row["task"] == "detect" and "top1" not in row and row["data"] == str(data)
        assert all(0 <= row[k] <= 1 for k in ("map", "map50", "precision", "recall"))
        assert row["map"] <= row["map50"] and row["reference"] == "best.pt"
    assert pt_row["speedup"] == 1.0 and onnx_row["speedup"] > 0
    assert pt_row["gflops"] == pytest.approx(4 * pt_row["gflops_at_imgsz"], rel=0.05)  # 128 vs 64 px
    assert pt_row["params"] == onnx_row["params"]
    # the same figures `optkit val` gives, for the .pt and through ONNX Runtime
    val = cli("val", best, "--data", data, "--workers", "0", "--json").json()
    assert (pt_row["map"], pt_row["map50"]) == (val["map"], val["map50"])
    assert onnx_row["map"] == pytest.approx(pt_row["map"], abs=0.02)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [row["task"] for row in rows] == ["detect", "detect"] and rows[0]["top1"] == ""
    assert float(rows[0]["map"]) == pt_row["map"] and float(rows[1]["map50"]) == onnx_row["map50"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cli("benchmark", best, onnx, "--data", data, "--latency-imgsz", "128", *QUICK)
    assert table.code == 0, table.err
    assert "mAP50-95 at 64 px, latency at 128 px" in table.out and "top-1" not in table.out
    header = _header(table.out)
    assert header[header.index("mAP50-95") + 1] == "mAP50"
    cells = _row(table.out, "best.pt")
    assert cells[header.index("mAP50-95")] == f"{pt_row['map']:.3f}"


@pytest.mark.slow
def test_benchmark_of_a_detector_that_finds_its_objects(cli, learned_det, det_data, tmp_path):
    """A detector fitted to its val images (tests/detect/conftest.py): benchmark reports the mAP that
    `optkit val` measures, well above zero, in the mAP columns."""
    r = cli("benchmark", learned_det, "--data", det_data, *QUICK, "--json")
    assert r.code == 0, r.err
    (row,) = r.json()["rows"]
    val = cli("val", learned_det, "--data", det_data, "--workers", "0", "--json").json()
    assert row["map50"] > 0.3 and row["map"] > 0.1
    assert {k: row[k] for k in ("map", "map50", "precision", "recall")} == {
        k: val[k] for k in ("map", "map50", "precision", "recall")
    }
    table = cli("benchmark", learned_det, "--data", det_data, *QUICK)
    header, cells = _header(table.out), _row(table.out, "learned.pt")
    assert cells[header.index("mAP50-95")] == f"{row['map']:.3f}"
    assert cells[header.index("mAP50")] == f"{row['map50']:.3f}"


def test_detector_table_shows_map_columns_in_order(cli, tmp_path, monkeypatch):
    """The detector's figures land in their columns: mAP50-95, then mAP50 (a detector trained for one
    epoch scores 0, so the task's evaluation is replaced by known numbers here)."""
    from optkit.tasks.detect import Detect

    pt = _det_checkpoint(tmp_path / "det.pt")
    data = write_yolo_data(tmp_path / "yolo")
    figures = {"precision": 0.9, "recall": 0.8, "map50": 0.7, "map": 0.42, "loss": None}
    calls = []

    def evaluate(self, model, loader, device, amp=False, options=None):
        calls.append(len(loader.dataset))
        return {**figures, "box_loss": None, "cls_loss": None, "dfl_loss": None, "images": 6}

    monkeypatch.setattr(Detect, "evaluate", evaluate)
    r = cli("benchmark", pt, "--data", data, *QUICK)
    assert r.code == 0, r.err
    assert calls == [6]  # the val split, once
    header, cells = _header(r.out), _row(r.out, "det.pt")
    assert cells[header.index("mAP50-95")] == "0.420" and cells[header.index("mAP50")] == "0.700"
    assert "mAP50-95 of" in r.err  # the step that measures it


# ------------------------------------------------------------------------------------ mixed tasks


@pytest.mark.slow
def test_mixed_classifier_and_detector_benchmark(cli, bench_run, tmp_path):
    best, onnx, cls_pt = bench_run["best"], bench_run["onnx"], bench_run["cls_pt"]
    datasets = ("--data", bench_run["cls_data"], "--data", bench_run["data"])  # in any order
    args = (cls_pt, best, onnx, *datasets, *QUICK, "--csv", tmp_path / "m.csv", "--plot", tmp_path / "m.png")
    r = cli("benchmark", *args, "--json")
    assert r.code == 0, r.err
    out = r.json()
    classifier, det_pt, det_onnx = out["rows"]
    assert [row["task"] for row in out["rows"]] == ["classify", "detect", "detect"]
    assert [row["imgsz"] for row in out["rows"]] == [32, 64, 64]  # each at its own trained size
    assert out["imgsz"] is None and out["latency_imgsz"] is None  # the sizes differ
    assert classifier["data"] == str(bench_run["cls_data"]) and det_pt["data"] == str(bench_run["data"])
    assert 0 <= classifier["top1"] <= classifier["top5"] <= 1 and "map" not in classifier
    assert "top1" not in det_pt and 0 <= det_pt["map"] <= det_pt["map50"] <= 1
    # speed-ups against the first artifact of the same task
    assert classifier["speedup"] == 1.0 and det_pt["speedup"] == 1.0
    assert (classifier["reference"], det_pt["reference"], det_onnx["reference"]) == (
        "cls.pt",
        "best.pt",
        "best.pt",
    )
    assert out["tasks"]["classify"]["shown"] == ["top1", "top5"]
    assert out["tasks"]["detect"]["shown"] == ["map", "map50"]
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["top1"] != "", row["map"] != "") for row in rows] == [
        (True, False),
        (False, True),
        (False, True),
    ]
    table = cli("benchmark", cls_pt, best, *datasets, *QUICK)
    assert table.code == 0, table.err
    header = _header(table.out)
    assert "top-1 / mAP50-95" in header and "top-5 / mAP50" in header and "task" in header
    assert _row(table.out, "cls.pt")[header.index("top-1 / mAP50-95")].endswith("%")
    assert _row(table.out, "best.pt")[header.index("top-1 / mAP50-95")] == f"{det_pt['map']:.3f}"
    assert "first artifact of the same task (cls.pt for classify, best.pt for detect)" in table.out


def test_each_task_gets_its_own_reference_and_size(tmp_path):
    """Paired per-round speed-ups within a task (fake timers): the detector is judged against the
    first detector, not against the classifier before it; each row is timed at its own size."""
    from optkit.workflows.benchmark import BenchmarkRequest, run_benchmark

    det_a, det_b = _det_checkpoint(tmp_path / "a.pt"), _det_checkpoint(tmp_path / "b.pt")
    cls_pt = _classifier(tmp_path)["cls_pt"]
    schedule = {"cls.pt": [1.0, 1.0], "a.pt": [8.0, 12.0], "b.pt": [4.0, 6.0]}  # ms per run, 2 rounds
    sizes = []

    def make_timer(item, size, req):
        sizes.append(size)
        ms = iter(schedule[item.path.name])
        return lambda warmup, runs: [next(ms)] * runs if runs else []

    req = BenchmarkRequest([str(cls_pt), str(det_a), str(det_b)], rounds=2, runs=1, warmup=0)
    r = run_benchmark(req, make_timer=make_timer)
    classifier, a, b = r["rows"]
    assert sizes == [32, 64, 64] and [row["latency_imgsz"] for row in r["rows"]] == [32, 64, 64]
    assert classifier["speedup"] == 1.0 and a["speedup"] == 1.0  # each is its task's reference
    assert b["speedup"] == pytest.approx(2.0) and b["reference"] == "a.pt"
    assert a["notes"] == [] and "map" in a and a["map"] is None  # no --data: not measured
    # --latency-imgsz times every row at one size; --imgsz measures every row at one size
    sizes.clear()
    req = BenchmarkRequest([str(cls_pt), str(det_a)], rounds=2, runs=1, warmup=0, latency_imgsz=96)
    schedule.update({"cls.pt": [1.0, 1.0], "a.pt": [8.0, 12.0]})
    r = run_benchmark(req, make_timer=make_timer)
    assert sizes == [96, 96] and r["latency_imgsz"] == 96 and r["imgsz"] is None


def test_rows_of_one_task_at_different_sizes(tmp_path, capsys):
    """Two detectors trained at 64 and 96 px: each measured and timed at its own size, the table says
    which (a px column), and the speed-up is marked as comparing different sizes."""
    from optkit.report.benchmark import print_benchmark
    from optkit.workflows.benchmark import BenchmarkRequest, run_benchmark

    small, large = _det_checkpoint(tmp_path / "s.pt"), _det_checkpoint(tmp_path / "l.pt", imgsz=96)
    req = BenchmarkRequest([str(small), str(large)], rounds=2, runs=1, warmup=0)
    r = run_benchmark(req, make_timer=lambda item, size, req: lambda warmup, runs: [1.0] * runs)
    assert [(row["imgsz"], row["latency_imgsz"]) for row in r["rows"]] == [(64, 64), (96, 96)]
    assert r["rows"][1]["notes"] == [
        "timed at 96 px, s.pt at 64 px: the speed-up compares different sizes (give --latency-imgsz)"
    ]
    capsys.readouterr()
    print_benchmark(r)
    text = capsys.readouterr().out
    assert "mAP50-95 at each artifact's size (px), latency at the same sizes" in text
    header = _header(text)
    assert _row(text, "l.pt")[header.index("px")] == "96" and "task" not in header  # one task
    assert _row(text, "l.pt")[-1] == "other size" and "other size = timed at 96 px" in text


def test_the_plot_has_a_panel_per_task_with_its_own_front():
    from optkit.report.benchmark import benchmark_figure
    from optkit.workflows.benchmark import task_facts

    def row(label, task, ms, **metrics):
        size = 64 if task == "classify" else 128
        facts = {"format": "pytorch", "file_bytes": 10**6, "speedup": 1.0, "unstable": False}
        return {"label": label, "task": task, "latency_ms": ms, "imgsz": size, "latency_imgsz": 224,
                **facts, **metrics}  # fmt: skip

    rows = [
        row("c1.pt", "classify", 4.0, top1=0.95, top5=1.0),
        row("c2.pt", "classify", 2.0, top1=0.90, top5=1.0),
        row("d1.pt", "detect", 10.0, map=0.60, map50=0.90),
        row("d2.pt", "detect", 1.0, map=0.52, map50=0.80),  # fastest of all: on its own panel's front only
        row("d3.pt", "detect", 12.0, map=0.55, map50=0.85),  # slower and worse than d1: off the front
    ]
    tasks = {name: task_facts(name, rows) for name in ("classify", "detect")}
    fig = benchmark_figure({"rows": rows, "tasks": tasks, "batch": 1, "imgsz": None, "latency_imgsz": 224})
    cls_ax, det_ax, bars = fig.axes[:3]
    assert (
        cls_ax.get_ylabel() == "val top-1, % (at 64 px)" and det_ax.get_ylabel() == "val mAP50-95 (at 128 px)"
    )
    assert list(cls_ax.lines[0].get_xdata()) == [2.0, 4.0]  # the classifiers' front: both
    assert list(det_ax.lines[0].get_xdata()) == [1.0, 10.0]  # the detectors' front: not d3
    labels = {t.get_text() for t in det_ax.texts}
    assert {"3", "4", "5"} <= labels  # numbered as the bars
    ticks = [t.get_text() for t in bars.get_yticklabels()]
    assert ticks[::-1][2] == "3  d1.pt (detect)"


# ---------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "which, fragment",
    [
        ("classifier data only", "no detect dataset for"),
        ("detector data only", "no classify dataset for"),
        ("two of one task", "are both classify datasets; give one --data per task"),
        ("neither", "is no classify or detect dataset (classify:"),
        ("same twice", "is given twice"),
    ],
)
def test_mixed_benchmark_refusals(cli, tmp_path, which, fragment):
    det_pt, classifier = _det_checkpoint(tmp_path / "det.pt"), _classifier(tmp_path)
    cls_data, det_data = classifier["cls_data"], write_yolo_data(tmp_path / "yolo")
    other = tmp_path / "other"
    other.mkdir()
    data = {
        "classifier data only": lambda: [cls_data],
        "detector data only": lambda: [det_data],
        "two of one task": lambda: [cls_data, _copy_tree(cls_data, tmp_path / "colors2"), det_data],
        "neither": lambda: [other],
        "same twice": lambda: [det_data, det_data],
    }[which]()
    flags = [part for spec in data for part in ("--data", spec)]
    r = cli("benchmark", classifier["cls_pt"], det_pt, *flags, *QUICK, "--plot", tmp_path / "p.png")
    assert r.code == 1 and _one_error_line(r.err) and fragment in r.err, r.err
    assert not (tmp_path / "p.png").exists()


def _one_error_line(err: str) -> bool:
    """The refusal is the last stderr line, and the only one (dataset scans may report above it)."""
    lines = err.strip().splitlines()
    return (
        lines[-1].startswith("error: ")
        and sum("error" in line for line in lines) == 1
        and "Traceback" not in err
    )


def _copy_tree(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_detector_dataset_with_other_classes_is_refused(cli, tmp_path):
    pt = save_checkpoint(
        checkpoint_from_model(create_model("test-det", num_classes=3), ["a", "b", "c"], 64, task="detect"),
        tmp_path / "det3.pt",
    )
    r = cli("benchmark", pt, "--data", write_yolo_data(tmp_path / "yolo"), *QUICK)
    assert r.code == 1 and _one_error_line(r.err) and "classes do not match" in r.err, r.err


# ---------------------------------------------------------------------------------------------- info


def test_info_names_a_detectors_figures(cli, tmp_path):
    metrics = {"precision": 0.85, "recall": 0.8, "map50": 0.903, "map": 0.612, "loss": 1.25}
    lineage = [{"stage": "train", "time": "t", "optkit_version": "0", "metrics": {**metrics, "epoch": 7}}]
    pt = _det_checkpoint(tmp_path / "det.pt", metrics=metrics, best_fitness=0.6411, epoch=6, lineage=lineage)
    r = cli("info", pt, "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert info["task"] == "detect" and info["names"] == DET_NAMES and info["num_classes"] == 2
    assert [(f["label"], f["value"]) for f in info["figures"]] == [
        ("mAP50-95", 0.612), ("mAP50", 0.903), ("P", 0.85), ("R", 0.8)
    ]  # fmt: skip
    assert info["fitness"] == {"label": "fitness (0.1 mAP50 + 0.9 mAP50-95)", "percent": False}
    table = cli("info", pt)
    assert table.code == 0 and "top-1" not in table.out
    assert "0.6411 fitness (0.1 mAP50 + 0.9 mAP50-95)" in table.out
    assert "mAP50-95 0.6120  mAP50 0.9030  P 0.8500  R 0.8000  loss 1.25" in table.out
    assert "mAP50-95 0.6120  mAP50 0.9030  epoch 7" in table.out  # the lineage row


def test_info_of_a_classifier_still_shows_top1(cli, tmp_path):
    model = create_model("test-tiny", num_classes=3)
    ckpt = checkpoint_from_model(
        model, CLS_NAMES, 32, metrics={"top1": 0.9862, "top5": 1.0}, best_fitness=0.9862
    )
    r = cli("info", save_checkpoint(ckpt, tmp_path / "c.pt"))
    assert r.code == 0, r.err
    assert "98.62% val top-1" in r.out and "top-1 98.62%  top-5 100.00%" in r.out


@pytest.mark.slow
def test_info_of_a_trained_detector(cli, bench_run):
    info = cli("info", bench_run["best"], "--json").json()
    assert info["task"] == "detect" and info["epoch"] == 1 and info["arch"] == "test-det"
    assert {f["key"] for f in info["figures"]} == {"map", "map50", "precision", "recall"}
    assert info["lineage"][0]["stage"] == "train"


# ------------------------------------------------------------------------------------------- profile


def test_profile_a_detector_at_640(cli, tmp_path):
    from optkit.measure.flops import count_flops
    from optkit.models import count_params
    from optkit.workflows.benchmark import inference_form

    pt = _det_checkpoint(tmp_path / "det.pt")
    torch.set_num_threads(1)
    r = cli("profile", pt, "--imgsz", "640", "--runs", "1", "--warmup", "0", "--threads", "1",
            "--per-layer", "--backward", "--batch-sizes", "1,2", "--json")  # fmt: skip
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["imgsz"] == 640 and out["input_shape"] == [1, 3, 640, 640] and out["num_classes"] == 2
    folded = inference_form(create_model("test-det", num_classes=2).eval())
    assert out["params"] == count_params(folded)
    assert out["gflops"] == pytest.approx(count_flops(folded, 640), rel=0.02)
    assert out["gflops"] == pytest.approx(100 * count_flops(folded, 64), rel=0.02)  # (640 / 64)^2
    layers = [row["name"] for row in out["per_layer"]["rows"]]
    assert any(name.startswith("model.22.") for name in layers)  # the Detect head's convs are timed
    assert [row["batch_size"] for row in out["sweep"]] == [1, 2] and out["backward"] is not None
    table = cli("profile", pt, "--imgsz", "640", "--runs", "1", "--warmup", "0", "--threads", "1")
    assert table.code == 0 and "1 x 3 x 640 x 640" in table.out and "test-det, 2 classes" in table.out
