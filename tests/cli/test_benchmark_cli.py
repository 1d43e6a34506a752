"""`optkit benchmark`: one row per artifact (.pt and .onnx), CSV, plot, and refusals."""

from __future__ import annotations

import csv

import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model


@pytest.fixture(autouse=True)
def _tables_at_pipe_width(monkeypatch):
    """The table at optkit's pipe width, as a user piping the output sees it: pytest-xdist workers export
    COLUMNS=80, which optkit.report.console obeys, and these tests read whole rows."""
    from optkit.report import console

    monkeypatch.delenv("COLUMNS", raising=False)
    console.out.cache_clear()
    yield
    console.out.cache_clear()


@pytest.fixture
def artifacts(cli, tmp_path):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).eval()
    pt = save_checkpoint(checkpoint_from_model(model, ["blue", "green", "red"], 32), tmp_path / "m.pt")
    r = cli("export", pt, "-o", tmp_path / "m.onnx", "--json")
    assert r.code == 0, r.err
    return pt, tmp_path / "m.onnx"


def test_benchmark_pt_and_onnx(cli, artifacts, tiny_data, tmp_path):
    pt, onnx_path = artifacts
    r = cli(
        "benchmark",
        pt,
        onnx_path,
        "--data",
        tiny_data,
        "--runs",
        "5",
        "--warmup",
        "1",
        "--csv",
        tmp_path / "b.csv",
        "--plot",
        tmp_path / "b.png",
        "--json",
    )
    assert r.code == 0, r.err
    out = r.json()
    assert out["imgsz"] == 32 and [row["format"] for row in out["rows"]] == ["pytorch", "onnx"]
    first, second = out["rows"]
    assert first["speedup"] == 1.0 and second["speedup"] > 0
    assert first["params"] == second["params"] and first["gflops"] == pytest.approx(
        second["gflops"], rel=0.02
    )
    assert abs(first["top1"] - second["top1"]) <= 1 / 18  # same model, at most one image apart
    assert first["top1"] <= first["top5"] and "map" not in first  # a classifier's figures only
    facts = [(row["task"], row["imgsz"], row["reference"]) for row in out["rows"]]
    assert facts == [("classify", 32, "m.pt")] * 2
    assert out["data"] == [str(tiny_data)] and list(out["tasks"]) == ["classify"]
    with open(tmp_path / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["format"] for row in rows] == ["pytorch", "onnx"]
    assert float(rows[0]["top1"]) == first["top1"] and "map" not in rows[0]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_table_without_data(cli, artifacts):
    pt, _ = artifacts
    r = cli("benchmark", pt, "--runs", "3", "--warmup", "0")
    assert r.code == 0 and "1.00x" in r.out and "n/a" in r.out  # no --data: top-1 not measured
    assert "top-1" in r.out and "top-5" in r.out and "mAP50" not in r.out


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("missing.pt",), "no such file"),
        (("--batch-size", "4"), "fixed batch of 1"),
        (("--runs", "0"), "--runs must be"),
        (("--imgsz", "48"), "stride 32"),
    ],
)
def test_benchmark_refusals(cli, artifacts, tmp_path, monkeypatch, extra, fragment):
    monkeypatch.chdir(tmp_path)
    pt, onnx_path = artifacts
    r = cli("benchmark", pt, onnx_path, *extra, "--plot", tmp_path / "p.png")
    assert r.code == 1 and fragment in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "p.png").exists()


# --- interleaved rounds, paired speed-ups, flags, labels, --latency-imgsz --------------------------


def _schedule_timer(schedule, log):
    """make_timer for run_benchmark: artifact i's k-th timed batch takes schedule[i][k] ms per run."""
    from optkit.workflows.benchmark import BenchmarkRequest

    def make(item, size, req: BenchmarkRequest):
        index = len(log)
        log.append((str(item.path), size))
        calls = []

        def timer(warmup, runs):
            if not runs:
                return []
            calls.append(runs)
            return [schedule[index][len(calls) - 1]] * runs

        return timer

    return make


def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_benchmark_speedup_is_median_of_paired_rounds(artifacts, tmp_path):
    from optkit.workflows.benchmark import SPREAD_LIMIT, BenchmarkRequest, run_benchmark

    pt, _ = artifacts
    steady, jumpy = _copy(pt, tmp_path / "s.pt"), _copy(pt, tmp_path / "j.pt")
    schedule = [
        [10.0, 10.0, 40.0, 40.0, 40.0],  # the first artifact: load in rounds 3-5
        [5.0, 5.0, 20.0, 20.0, 20.0],  # steadily twice as fast
        [5.0, 6.0, 20.0, 38.0, 44.0],  # the load hit it harder in some rounds
    ]
    log = []
    req = BenchmarkRequest([str(pt), str(steady), str(jumpy)], rounds=5, runs=3, warmup=0)
    r = run_benchmark(req, make_timer=_schedule_timer(schedule, log))
    base, two, three = r["rows"]
    assert r["rounds"] == 5 and [path for path, _ in log] == req.artifacts
    assert base["speedup"] == 1.0 and base["speedup_spread"] == 0 and not base["unstable"]
    assert two["speedup"] == pytest.approx(2.0) and not two["unstable"]
    assert three["speedup"] == pytest.approx(10 / 6)  # median of the paired ratios, not 40 / 20
    ratios = [b / t for b, t in zip(schedule[0], schedule[2], strict=True)]
    assert three["round_speedups"] == pytest.approx(ratios)
    assert three["speedup_spread"] > SPREAD_LIMIT and three["unstable"]
    assert three["latency_ms"] == 20.0 and base["latency_ms"] == 40.0  # median of all 15 runs each


def test_benchmark_table_marks_wide_spread_and_states_threshold(artifacts, tmp_path, capsys):
    from optkit.report.benchmark import print_benchmark
    from optkit.workflows.benchmark import BenchmarkRequest, run_benchmark

    pt, _ = artifacts
    other = _copy(pt, tmp_path / "other.pt")
    schedule = [[10.0, 10.0, 10.0], [5.0, 9.0, 20.0]]  # ratios 2, 1.1, 0.5
    req = BenchmarkRequest([str(pt), str(other)], rounds=3, runs=1, warmup=0)
    r = run_benchmark(req, make_timer=_schedule_timer(schedule, []))
    capsys.readouterr()
    print_benchmark(r)
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if "other.pt" in line)
    assert "1.11x†" in row  # the median ratio, marked
    assert "† " in text and "10%" in text  # the footnote states the threshold


def test_benchmark_notes_for_no_gain_and_fake_quant():
    from optkit.workflows.benchmark import row_notes

    assert row_notes({"format": "onnx int8", "speedup": 0.9}, 224, first=False) == [
        "does not pay off at 224 px: slower than the first artifact at this size"
    ]
    assert row_notes({"format": "onnx", "speedup": 0.9}, 224, first=True) == []
    fake = row_notes({"format": "pytorch int8", "speedup": 0.3}, 64, first=False)
    assert "fake quantization: runs in float, not a deployment format" in fake


def test_benchmark_labels_tell_same_named_files_apart(cli, artifacts, tmp_path):
    pt, onnx_path = artifacts
    a = _copy(pt, tmp_path / "runs" / "train" / "weights" / "best.pt")
    b = _copy(pt, tmp_path / "runs" / "qat" / "weights" / "best.pt")
    r = cli("benchmark", a, b, onnx_path, "--runs", "1", "--rounds", "2", "--warmup", "0", "--json")
    assert r.code == 0, r.err
    labels = [row["label"] for row in r.json()["rows"]]
    assert labels == ["train/weights/best.pt", "qat/weights/best.pt", "m.onnx"]
    table = cli("benchmark", a, b, "--runs", "1", "--rounds", "2", "--warmup", "0")
    assert "train/weights/best.pt" in table.out and "qat/weights/best.pt" in table.out


def test_short_labels_shortest_distinguishing_suffix():
    from optkit.workflows.benchmark import short_labels

    paths = ["a/x/best.pt", "b/x/best.pt", "c/last.pt"]
    assert short_labels(paths) == ["a/x/best.pt", "b/x/best.pt", "last.pt"]
    assert short_labels(["m.pt", "m.pt"]) == ["m.pt", "m.pt (2)"]  # the same file twice


def test_latency_imgsz_times_at_n_and_measures_accuracy_at_trained_size(artifacts, tiny_data):
    from optkit.workflows.benchmark import BenchmarkRequest, default_timer, run_benchmark

    pt, _ = artifacts
    shapes = []

    def spy(item, size, req):
        item.model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
        return default_timer(item, size, req)

    req = BenchmarkRequest([str(pt)], data=str(tiny_data), latency_imgsz=64, rounds=2, runs=3, warmup=1)
    r = run_benchmark(req, make_timer=spy)
    assert r["imgsz"] == 32 and r["latency_imgsz"] == 64
    timed = [s for s in shapes if s[2:] == (64, 64)]
    assert timed == [(1, 3, 64, 64)] * (1 + 2 * (1 + 3))  # warm-up, then 2 rounds of 1 untimed + 3 timed
    assert {s[2:] for s in shapes} == {(32, 32), (64, 64)}  # accuracy at the trained 32 px
    assert r["rows"][0]["gflops"] == pytest.approx(4 * r["rows"][0]["gflops_at_imgsz"], rel=0.05)


def test_latency_imgsz_on_onnx(cli, artifacts, tiny_data, tmp_path):
    pt, fixed = artifacts
    r = cli("benchmark", pt, fixed, "--latency-imgsz", "64", "--plot", tmp_path / "p.png")
    assert r.code == 1 and "--dynamic" in r.err and "64x64" in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "p.png").exists()
    dyn = tmp_path / "d.onnx"
    assert cli("export", pt, "-o", dyn, "--dynamic", "--json").code == 0
    r = cli("benchmark", pt, dyn, "--data", tiny_data, "--latency-imgsz", "64", "--runs", "2", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["imgsz"] == 32 and out["latency_imgsz"] == 64
    first, second = out["rows"]
    assert abs(first["top1"] - second["top1"]) <= 1 / 18 and second["latency_ms"] > 0


def test_benchmark_plot_is_readable(artifacts, tmp_path):
    from optkit.report.benchmark import benchmark_figure, pareto_front
    from optkit.workflows.benchmark import task_facts

    rows = [
        {"label": "train/weights/best.pt", "format": "pytorch", "latency_ms": 3.0, "top1": 0.97},
        {"label": "pruned.pt", "format": "pytorch", "latency_ms": 2.0, "top1": 0.90},
        {"label": "qat/weights/best.pt", "format": "pytorch int8", "latency_ms": 300.0, "top1": 0.96},
        {"label": "model-int8.onnx", "format": "onnx int8", "latency_ms": 1.0, "top1": 0.96},
    ]
    for row in rows:
        row.update(file_bytes=1_000_000, speedup=3.0 / row["latency_ms"], unstable=False)
        row.update(task="classify", imgsz=64, latency_imgsz=224)
    assert pareto_front([(r["latency_ms"], r["top1"]) for r in rows]) == [3, 0]
    tasks = {"classify": task_facts("classify", rows)}
    fig = benchmark_figure({"rows": rows, "tasks": tasks, "batch": 1, "imgsz": 64, "latency_imgsz": 224})
    scatter = fig.axes[0]
    assert len(fig.axes) == 2 and scatter.get_xscale() == "log" and scatter.get_legend() is not None
    assert scatter.get_ylabel() == "val top-1, % (at 64 px)"
    assert "224 px" in scatter.get_xlabel()
    texts = {t.get_text() for ax in fig.axes for t in ax.texts} | {
        t.get_text() for ax in fig.axes for t in ax.get_yticklabels()
    }
    assert {"train/weights/best.pt", "qat/weights/best.pt"} <= {t.split("  ")[-1] for t in texts}


def test_plot_says_below_the_axis_only_of_points_under_it():
    """The demo's case: pruned.pt far below the rest is drawn on the axis's bottom with its value and a
    label of its own; a point 10.4 points under the best but inside the axis is drawn at its value."""
    from optkit.report.benchmark import benchmark_figure
    from optkit.workflows.benchmark import task_facts

    points = [("best.pt", 6.5, 0.929), ("pruned.pt", 4.9, 0.125), ("finetuned.pt", 4.7, 0.831),
              ("stripped.pt", 4.5, 0.831), ("model-int8.onnx", 1.1, 0.8256)]  # fmt: skip
    rows = [
        {"label": label, "format": "pytorch", "latency_ms": ms, "top1": top1} for label, ms, top1 in points
    ]
    for row in rows:
        row.update(file_bytes=1_000_000, speedup=1.0, unstable=False, task="classify", imgsz=64)
    fig = benchmark_figure({"rows": rows, "tasks": {"classify": task_facts("classify", rows)}, "batch": 1,
                            "latency_imgsz": 224})  # fmt: skip
    scatter = fig.axes[0]
    low, high = scatter.get_ylim()
    assert low < 82.56 < high
    labels = [t.get_text() for t in scatter.texts]
    assert [t for t in labels if "below the axis" in t] == ["2 (12.5%, below the axis)"]
    drawn = [y for c in scatter.collections for _, y in c.get_offsets()]
    assert all(low < y < high for y in drawn) and 82.56 in [round(y, 2) for y in drawn]


def test_headline_metrics_are_the_fitness_metric_and_its_neighbour():
    from optkit.tasks import get_task
    from optkit.workflows.benchmark import headline_metrics

    assert [m.label for m in headline_metrics(get_task("classify"))] == ["top-1", "top-5"]
    assert [m.key for m in headline_metrics(get_task("detect"))] == ["map", "map50"]


def test_csv_keeps_top1_top5_and_adds_the_other_tasks_metric_keys(tmp_path):
    from optkit.report.benchmark import CSV_COLUMNS, csv_columns, write_csv
    from optkit.workflows.benchmark import task_facts

    rows = [
        {"label": "c.pt", "task": "classify", "top1": 0.5, "top5": 1.0, "notes": []},
        {"label": "d.pt", "task": "detect", "map": 0.25, "map50": 0.5, "precision": 0.75, "recall": 0.5,
         "notes": ["fake quantization: runs in float, not a deployment format"]},
    ]  # fmt: skip
    r = {
        "rows": rows,
        "rounds": 3,
        "tasks": {name: task_facts(name, rows) for name in ("classify", "detect")},
    }
    assert csv_columns(r)[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)  # existing columns stay in place
    assert csv_columns(r)[len(CSV_COLUMNS) :] == ["precision", "recall", "map50", "map"]
    write_csv(r, tmp_path / "b.csv")
    with open(tmp_path / "b.csv") as f:
        classifier, detector = csv.DictReader(f)
    assert (classifier["top1"], classifier["map"], classifier["task"]) == ("0.5", "", "classify")
    assert (detector["top1"], detector["map"], detector["map50"], detector["rounds"]) == (
        "",
        "0.25",
        "0.5",
        "3",
    )
    classify_only = {"rows": rows[:1], "rounds": 3, "tasks": {"classify": r["tasks"]["classify"]}}
    assert csv_columns(classify_only) == list(CSV_COLUMNS)


def test_int8_onnx_rows_are_judged_against_the_float_onnx_file():
    from optkit.workflows.benchmark import add_int8_gain_notes

    def row(fmt, label, rounds, task="classify"):
        return {"format": fmt, "label": label, "round_latency_ms": rounds, "notes": [], "task": task}

    rows = [
        row("pytorch", "best.pt", [5.0, 5.0, 5.0]),
        row("onnx", "det.onnx", [9.0, 9.0, 9.0], task="detect"),  # another task's file: not the base
        row("onnx", "model.onnx", [1.2, 1.3, 1.2]),
        row("onnx int8", "int8.onnx", [1.2, 1.25, 1.1]),  # paired ratios 1.0, 1.04, 1.09: median 1.04
        row("onnx int8", "fast.onnx", [0.6, 0.65, 0.6]),  # twice as fast
        row("onnx int8", "det-int8.onnx", [3.0, 3.0, 3.0], task="detect"),  # against det.onnx: 3x
    ]
    add_int8_gain_notes(rows)
    assert rows[3]["speedup_vs_float_onnx"] == pytest.approx(1.3 / 1.25)
    assert rows[3]["notes"] == ["no int8 gain over model.onnx (1.04x)"]
    assert rows[4]["speedup_vs_float_onnx"] == pytest.approx(2.0) and rows[4]["notes"] == []
    assert rows[5]["speedup_vs_float_onnx"] == pytest.approx(3.0) and rows[5]["notes"] == []
    assert "speedup_vs_float_onnx" not in rows[0] and rows[0]["notes"] == []


def test_classifiers_are_compared_image_by_image(cli, artifacts, tiny_data, tmp_path):
    """A second classifier's row counts the val images only it, or only the reference, gets right: the
    counts give the top-1 difference, and McNemar's p says whether chance explains it."""
    pt, onnx_path = artifacts
    torch.manual_seed(1)
    other = create_model("test-tiny", num_classes=3).eval()
    other_pt = save_checkpoint(checkpoint_from_model(other, ["blue", "green", "red"], 32), tmp_path / "o.pt")
    r = cli(
        "benchmark", pt, onnx_path, other_pt, "--data", tiny_data, "--runs", "2", "--warmup", "0", "--json"
    )
    assert r.code == 0, r.err
    ref, same, diff = r.json()["rows"]
    assert "paired_top1" not in ref and "_correct" not in ref
    assert same["paired_top1"]["images"] == 18
    assert same["paired_top1"]["only_a"] == same["paired_top1"]["only_b"] == 0  # its own ONNX export
    p = diff["paired_top1"]
    assert p["images"] == 18 and p["diff"] == pytest.approx(diff["top1"] - ref["top1"])
    assert (p["only_a"] - p["only_b"]) / 18 == pytest.approx(p["diff"])
    assert p["only_a"] + p["only_b"] > 0  # random weights of another seed: some image tells them apart
    assert 0 < p["mcnemar_p"] <= 1 and p["diff_ci95"][0] <= p["diff"] <= p["diff_ci95"][1]
    note = next(n for n in diff["notes"] if n.startswith("top-1 image by image against m.pt"))
    assert f"McNemar p {p['mcnemar_p']:.2f}" in note
    table = cli("benchmark", pt, other_pt, "--data", tiny_data, "--runs", "2", "--warmup", "0")
    tag = f"{p['only_a']} vs {p['only_b']} images, p {p['mcnemar_p']:.2f}"
    assert table.code == 0 and tag in table.out.replace("\n", " ")  # the note's tag (wrapped maybe)
