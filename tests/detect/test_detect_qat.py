"""`optkit qat` on a detector (issue 15, part 4): the detection loss plus distillation from the float model,
best epoch by fitness (0.1 mAP50 + 0.9 mAP50-95), float / PTQ / QAT mAP50-95 and mAP50 in the report; the
output stays quantized, reloads with weights_only=True and scores what the report says."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from yolo_folders import NAMES

from optkit.checkpoint import build_model, load_checkpoint
from optkit.tasks import get_task

CALIBRATION_IMAGES = 16  # the whole tiny train split

pytestmark = pytest.mark.slow  # every test here fine-tunes or builds a quantized detector


@pytest.fixture(scope="module")
def int8_det(tmp_path_factory, learned_det, det_data) -> Path:
    """ptq-calibrate's flow on the learned detector (max calibration on the whole tiny train split; the
    head's post-processing float, its default)."""
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    out = tmp_path_factory.mktemp("det-int8") / "int8.pt"
    request = PtqRequest(str(learned_det), str(det_data), num_images=CALIBRATION_IMAGES,
                         quant=QuantConfig(method="max"), output=str(out))  # fmt: skip
    run_ptq(request)
    return out


def _table_row(text: str, first_cell: str) -> str:
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == first_cell:
            return cells[1]
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def _stage_figures(cell: str) -> dict[str, float]:
    """ "float 0.7500, PTQ 0.7012, QAT 0.7320" -> {"float": 0.75, "PTQ": 0.7012, "QAT": 0.732}."""
    return {name: float(value) for name, value in re.findall(r"(float|PTQ|QAT) ([0-9.]+)", cell)}


def _val_metrics(model, data: Path) -> dict:
    task = get_task("detect")
    spec = task.resolve_data(str(data), splits=("val",))
    loader = task.val_loader(spec, NAMES, 64, 8, 0)
    return task.evaluate(model, loader, torch.device("cpu"))


@pytest.mark.usefixtures("wide_console")
def test_qat_cli_fine_tunes_a_quantized_detector(cli, tmp_path, det_data, int8_det):
    from optkit.quant.quantizers import quantize_entry, quantized_layers, quantizers

    args = ("--data", det_data, "--epochs", "2", "--batch-size", "8", "--workers", "0", "--lr0", "0.001")
    r = cli("qat", int8_det, *args, "--project", tmp_path / "runs")
    assert r.code == 0, r.err
    best = tmp_path / "runs" / "exp" / "weights" / "best.pt"
    assert _table_row(r.out, "best").startswith(str(best))
    assert "detection loss (box, cls, dfl) + distillation from the float model" in _table_row(r.out, "loss")
    after = load_checkpoint(best)
    shown = {"mAP50-95": "map", "mAP50": "map50"}
    for label, key in shown.items():
        figures = _stage_figures(_table_row(r.out, label))
        assert set(figures) == {"float", "PTQ", "QAT"} and all(0 <= v <= 1 for v in figures.values())
        assert figures["QAT"] == pytest.approx(after.metrics[key], abs=5e-5)  # best.pt's own validation
    assert figures["float"] > 0.5  # the learned detector finds its val objects (mAP50)
    terms = [float(v) for v in re.findall(r"[0-9.e+-]+(?= ->| \()", _table_row(r.out, "distillation"))]
    assert len(terms) == 2 and all(math.isfinite(v) and v > 0 for v in terms)
    # the best epoch is the one of highest 0.1 mAP50 + 0.9 mAP50-95, and best.pt says which
    epoch = int(re.search(r"epoch (\d+)", _table_row(r.out, "best")).group(1))
    rows = [line.split(",") for line in (best.parents[1] / "results.csv").read_text().splitlines()]
    header, rows = [c.strip() for c in rows[0]], [[float(c) for c in row] for row in rows[1:]]
    fitness = [0.1 * row[header.index("map50")] + 0.9 * row[header.index("map")] for row in rows]
    assert epoch == 1 + fitness.index(max(fitness)) and after.epoch == epoch - 1
    # still quantized, the same ranges (amax is not trained), the weights moved
    before = load_checkpoint(int8_det)
    assert quantize_entry(after.transforms)["amax_shapes"] == quantize_entry(before.transforms)["amax_shapes"]
    model = build_model(after)
    assert len(quantized_layers(model)) == len(quantized_layers(build_model(before))) > 0
    name = next(iter(quantizers(model)))
    assert torch.equal(before.model[f"{name}._amax"], quantizers(model)[name].amax)
    assert any(not torch.equal(before.model[k], after.model[k]) for k in before.model if k.endswith("weight"))
    # the file reloads with weights_only=True to the same outputs, and scores what the report printed
    raw = torch.load(best, weights_only=True)
    assert raw["model"].keys() == after.model.keys()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(build_model(load_checkpoint(best))(x), model(x))
    assert _val_metrics(model, det_data)["map"] == pytest.approx(after.metrics["map"], abs=1e-6)


def test_qat_json_names_every_detection_metric(tmp_path, det_data, int8_det):
    from optkit.workflows.qat import QatRequest, run_qat

    train = {"data": str(det_data), "epochs": 1, "batch_size": 8, "workers": 0, "project": str(tmp_path)}
    r = run_qat(QatRequest(str(int8_det), train, distill=False, num_images=8))
    for stage in ("float", "ptq", "qat"):
        assert {f"{stage}_{k}" for k in ("map", "map50", "precision", "recall")} <= set(r)
    assert "float_top1" not in r and "qat_top1" not in r
    assert [m["key"] for m in r["shown"]] == ["map", "map50"]
    assert r["distill"] is False and r["distill_loss"] == [] and r["loss"] == "detection loss (box, cls, dfl)"
    assert r["best_map"] == pytest.approx(0.1 * r["qat_map50"] + 0.9 * r["qat_map"])  # the fitness
    assert r["float_map"] >= 0.5 * r["float_map50"] > 0


def _trainer(tmp_path, data, weights, **options):
    from optkit.quant.qat import QatTrainer
    from optkit.train.config import TrainConfig

    cfg = TrainConfig(weights=str(weights), data=str(data), epochs=1, batch_size=8, workers=0,
                      project=str(tmp_path))  # fmt: skip
    trainer = QatTrainer(cfg, distill=True, distill_options=options)
    trainer.setup()
    return trainer


def _train_batch(det_data):
    task = get_task("detect")
    spec = task.resolve_data(str(det_data), splits=("train",))
    images = task.image_dataset(spec, NAMES, 64, "train")
    return task.collate([images[i] for i in range(8)])


def test_distillation_is_zero_against_itself_and_falls_when_trained_on(tmp_path, det_data, int8_det):
    from optkit.quant.quantizers import quantization_off

    trainer = _trainer(tmp_path, det_data, int8_det, features=1.0)
    task, images = trainer.task, _train_batch(det_data)[0]

    def term() -> torch.Tensor:
        student = task.distill_forward(trainer.train_model, images)
        with torch.no_grad():
            teacher = task.distill_forward(trainer.teacher, images)
        return task.distill_loss(student, teacher, trainer.distill_options)

    with quantization_off(trainer.model):  # the student is then the float model: the teacher
        assert term().item() == 0.0
    # quantized: positive. Near the teacher the term is mostly rounding noise that small steps do not
    # remove, so move the student away first (weights noised by 20% of their spread, seed 0): then a few
    # steps on the term alone bring it down, and only the student learns
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * 0.2 * p.std())
    teacher_before = copy.deepcopy(trainer.teacher.state_dict())
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-4)
    values = []
    for _ in range(6):
        loss = term()
        values.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(math.isfinite(v) for v in values) and values[0] > 0
    assert values[-1] < 0.8 * values[0], values
    assert all(p.grad is None for p in trainer.teacher.parameters())
    after = trainer.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)


def test_distillation_adds_to_the_detection_loss(tmp_path, det_data, int8_det):
    from optkit.quant.qat import QatTrainer
    from optkit.train.config import TrainConfig

    images, targets = _train_batch(det_data)
    losses = {}
    for distill in (False, True):
        cfg = TrainConfig(weights=str(int8_det), data=str(det_data), epochs=1, batch_size=8, workers=0,
                          project=str(tmp_path / f"r{distill}"))  # fmt: skip
        trainer = QatTrainer(cfg, distill=distill)
        trainer.setup()
        with torch.no_grad():
            losses[distill], items = trainer._loss(images, targets)
        assert items.shape == (3,) and (trainer.teacher is not None) == distill
    assert losses[True].item() > losses[False].item() > 0


def test_qat_refuses_classification_data_for_a_detector(cli, tmp_path, int8_det, tiny_data):
    r = cli("qat", int8_det, "--data", tiny_data, "--epochs", "1", "--project", tmp_path / "runs")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "data.yaml" in lines[0] and "Traceback" not in r.err
    assert not (tmp_path / "runs").exists()
