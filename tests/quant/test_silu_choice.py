"""How an onnxruntime INT8 export chooses its SiLU form (optkit.quant.silu_form): never a form that fails the
parity check, the same form on every run when the two time alike, and one error line with both forms'
figures, and advice that works, when neither passes.

The checkpoints are test-tiny (SiLU) with seeded weights and BatchNorm statistics taken from the images in
training mode, as a lightly trained model has them, PTQ-calibrated (mse, 16 images). The seeds were found by
scanning; each test first shows the premise (which form fails) with the form fixed."""

from __future__ import annotations

import hashlib
import random
import re

import onnx
import pytest
import torch

from optkit.quant import silu_form
from optkit.quant.qdq import QdqReport
from optkit.stages.export import ParityCase

CLASSES = ["blue", "green", "red"]
ATOL = 0.25  # onnxruntime's default tolerance (optkit.quant.onnx_export.ATOL_INT8)
# (seed, training-mode passes over the 72 train images; 0: statistics fitted exactly, momentum None)
LIGHT = (2, 20)  # as after a short training run: quickgelu 0.001, qlinear 0.42 of the output scale
FITTED = (2, 0)  # quickgelu 0.42, qlinear 0.17
BOTH_FAIL = (6, 0)  # quickgelu 0.72, qlinear 1.10
BOTH_PASS = (0, 3)  # quickgelu 0.001, qlinear 0.06


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from image_folders import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("silu") / "colors", CLASSES, per_class=24)


@pytest.fixture(scope="module")
def int8(data, tmp_path_factory):
    """int8(case) -> path of the case's PTQ-calibrated checkpoint (made once per module)."""
    folder = tmp_path_factory.mktemp("ckpts")
    made = {}

    def make(case: tuple[int, int]):
        if case not in made:
            made[case] = _calibrated(data, folder, *case)
        return made[case]

    return make


def _calibrated(data, folder, seed: int, passes: int):
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data import ImageFolder, ValTransform
    from optkit.models import create_model
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    train = ImageFolder(data / "train", ValTransform(32))
    images = torch.stack([train[i][0] for i in range(len(train))])
    torch.manual_seed(seed)
    model = create_model("test-tiny", num_classes=len(CLASSES), act="silu").train()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = bn.momentum if passes else None  # None: a cumulative average, the exact statistics
    with torch.no_grad():
        for _ in range(max(passes, 1)):
            model(images)
    pt = save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32), folder / f"f{seed}-{passes}.pt")
    out = folder / f"int8-{seed}-{passes}.pt"
    run_ptq(PtqRequest(str(pt), str(data), num_images=16, quant=QuantConfig(method="mse"), output=str(out)))
    return out


def _timer(speedups: list[float]):
    """A timing seam for silu_form.time_graphs: per round, quickgelu 1 ms and qlinear 1/speedup ms."""

    def timer(graphs: dict[str, bytes], imgsz: int | None = None) -> dict[str, list[float]]:
        assert set(graphs) == {"quickgelu", "qlinear"}
        return {"quickgelu": [1.0] * len(speedups), "qlinear": [1.0 / s for s in speedups]}

    return timer


def _noisy_tie(seed: int, rounds: int = 5) -> list[float]:
    """Paired speed-ups of forms that time alike: each round within ±8%, as on a loaded 2-core VM."""
    rng = random.Random(seed)
    return [1.0 + rng.uniform(-0.08, 0.08) for _ in range(rounds)]


def _export(cli, pt, out, *options):
    return cli("export", pt, "--int8-target", "onnxruntime", "-o", out, "--json", *options)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def test_lightly_trained_default_export_writes_the_form_that_passes(cli, int8, tmp_path, monkeypatch):
    pt = int8(LIGHT)
    forced = _export(cli, pt, tmp_path / "q.onnx", "--silu-form", "qlinear")
    assert forced.code == 1 and not (tmp_path / "q.onnx").exists()  # the premise: qlinear fails parity
    # whatever the timing says (qlinear far faster, a noisy tie, this machine's own), quickgelu, every run
    for timer in (_timer([1.5] * 5), _timer(_noisy_tie(1)), silu_form.time_graphs):
        monkeypatch.setattr(silu_form, "time_graphs", timer)
        r = _export(cli, pt, tmp_path / "a.onnx")
        assert r.code == 0, r.err
        q = r.json()["int8"]
        assert q["silu_form"] == "quickgelu" and "QuickGelu" in _ops(tmp_path / "a.onnx")
        assert q["silu_parity"]["qlinear"] > ATOL >= q["silu_parity"]["quickgelu"] >= r.json()["max_rel"]
        assert q["silu_reason"].startswith("qlinear fails the parity check")
        assert f"{q['silu_parity']['qlinear']:.3g}" in q["silu_reason"]
        assert not q["silu_timing_ms"]  # a failing form is not timed


def test_preferred_form_failing_parity_gives_the_other_and_says_why(cli, int8, tmp_path, monkeypatch):
    pt = int8(FITTED)
    assert _export(cli, pt, tmp_path / "g.onnx", "--silu-form", "quickgelu").code == 1  # the premise
    monkeypatch.setattr(silu_form, "time_graphs", _timer([0.5] * 5))  # quickgelu twice as fast
    r = _export(cli, pt, tmp_path / "a.onnx")
    assert r.code == 0, r.err
    q = r.json()["int8"]
    assert q["silu_form"] == "qlinear" and "QuickGelu" not in _ops(tmp_path / "a.onnx")
    assert q["silu_parity"]["quickgelu"] > ATOL >= q["silu_parity"]["qlinear"]
    assert q["silu_reason"].startswith("quickgelu fails the parity check")
    printed = cli("export", pt, "--int8-target", "onnxruntime", "-o", tmp_path / "b.onnx")
    assert printed.code == 0 and "SiLU choice" in printed.out and "quickgelu fails the parity" in printed.out


def test_forms_that_time_alike_give_quickgelu_whatever_the_noise():
    """The decision itself, with the graphs, the parity check and the timings injected."""

    class Graph:
        def __init__(self, form):
            self.form = form

        def SerializeToString(self):  # noqa: N802 (onnx's name)
            return self.form.encode()

    def build(silu_unit: bool):
        return Graph("quickgelu" if silu_unit else "qlinear"), QdqReport("onnxruntime", silu_units=3)

    passing = silu_form.ParityCheck(lambda g: [ParityCase("random", [1, 3, 32, 32], 0.01, 0.01, 1.0)], ATOL)

    def chosen(speedups):
        graph, report = silu_form.choose(build, "auto", passing, timer=_timer(speedups))
        assert graph.form == report.silu_form
        return report

    for seed in range(50):  # forms within ±8% of each other in every round
        assert chosen(_noisy_tie(seed)).silu_form == "quickgelu"
    assert chosen([1.0, 1.0, 3.0, 1.0, 0.98]).silu_form == "quickgelu"  # one lucky round is no evidence
    assert chosen([1.1] * 5).silu_form == "quickgelu"  # the margin is exclusive
    tie = chosen([1.03, 0.97, 1.05, 1.02, 0.99])
    assert tie.silu_qlinear_speedup == pytest.approx(1.02) and "not above 1.10x" in tie.silu_reason
    fast = chosen([1.25, 1.18, 1.4, 1.22, 1.3])
    assert fast.silu_form == "qlinear" and fast.silu_qlinear_speedup == pytest.approx(1.25)
    assert set(fast.silu_timing_ms) == {"quickgelu", "qlinear"} and "above the 1.10x" in fast.silu_reason
    _, unchecked = silu_form.choose(build, "auto", None, timer=_timer(_noisy_tie(0)))  # --no-check
    assert unchecked.silu_form == "quickgelu" and "not checked" in unchecked.silu_reason


def test_identical_default_runs_write_identical_files(cli, int8, tmp_path, monkeypatch):
    """Both forms pass and time alike: every run writes the same quickgelu file."""
    pt = int8(BOTH_PASS)
    digests = set()
    for seed in range(4):
        monkeypatch.setattr(silu_form, "time_graphs", _timer(_noisy_tie(seed)))
        r = _export(cli, pt, tmp_path / f"{seed}.onnx")
        assert r.code == 0, r.err
        q = r.json()["int8"]
        assert q["silu_form"] == "quickgelu" and max(q["silu_parity"].values()) <= ATOL
        assert 0.9 < q["silu_qlinear_speedup"] < 1.1 and "the fixed choice for ties" in q["silu_reason"]
        digests.add(hashlib.sha256((tmp_path / f"{seed}.onnx").read_bytes()).hexdigest())
    assert len(digests) == 1


def _figure(message: str, form: str) -> float:
    return float(re.search(rf"{form} ([0-9.]+) on random", message).group(1))


def test_no_form_passing_gives_one_error_line_with_both_figures_and_working_advice(cli, int8, data, tmp_path):
    pt = int8(BOTH_FAIL)
    wide = ("--atol", "100")  # each form's figure, with the check opened wide
    measured = {
        form: _export(cli, pt, tmp_path / f"{form}.onnx", "--silu-form", form, *wide).json()["max_rel"]
        for form in ("quickgelu", "qlinear")
    }
    assert min(measured.values()) > ATOL  # the premise
    r = _export(cli, pt, tmp_path / "a.onnx")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: no SiLU form")
    assert not (tmp_path / "a.onnx").exists() and "Traceback" not in r.err
    for form, value in measured.items():
        assert _figure(lines[0], form) == pytest.approx(value, rel=1e-2)
    assert "--no-simplify" not in lines[0]  # measured: it changes nothing for INT8 graphs
    # the advice works: a graph for TensorRT passes, and so does the --atol named
    assert "--int8-target tensorrt" in lines[0]
    assert cli("export", pt, "--int8-target", "tensorrt", "-o", tmp_path / "t.onnx").code == 0
    atol = re.search(r"--atol ([0-9.e-]+)", lines[0]).group(1)
    assert float(atol) >= min(measured.values())
    assert _export(cli, pt, tmp_path / "b.onnx", "--atol", atol).code == 0
    # with --data the line also gives the real images' figures (and no longer suggests --data)
    v = _export(cli, pt, tmp_path / "c.onnx", "--data", data)
    assert v.code == 1 and "val images" in v.err and "--data D" not in v.err


def test_fixed_form_failing_names_the_other_form_that_passes(cli, int8, tmp_path):
    pt = int8(LIGHT)
    r = _export(cli, pt, tmp_path / "q.onnx", "--silu-form", "qlinear")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: --silu-form qlinear:")
    assert "The quickgelu form passes" in lines[0] and "use --silu-form quickgelu" in lines[0]
    assert "--no-simplify" not in lines[0] and not (tmp_path / "q.onnx").exists()
    ok = _export(cli, pt, tmp_path / "g.onnx", "--silu-form", "quickgelu")  # the advice works
    assert ok.code == 0 and ok.json()["int8"]["silu_reason"] == "as asked (--silu-form quickgelu)"
