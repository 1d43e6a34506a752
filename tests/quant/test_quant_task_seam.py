"""ptq-calibrate and qat ask the model's task (docs/architecture.md, "The task seam"): data, evaluation,
fitness (in which --auto-skip's budget is measured) and label-free agreement come from it; the quant
library takes models, configs and batches and names no CLI flag (the flows word the flags)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from optkit.tasks import Metric, Task, get_task, register_task

CLASSES = ["blue", "green", "red"]
TASK = "ptq-test-score"
LIBRARY = [Path(__file__).parents[2] / "optkit" / "quant" / f"{m}.py" for m in
           ("ptq", "qat", "compare", "sensitivity", "config", "ranges")]  # fmt: skip
FLAG = re.compile(r"--[a-z]")


class Score(Task):
    """Class folders scored by a metric that is not top-1: the mean probability given to the true class;
    its agreement: the two highest classes are the same set. Records what the flows asked of it."""

    name = TASK
    metrics = (Metric("score", "score"),)
    fitness_key = "score"
    output_names = ("logits",)

    def __init__(self) -> None:
        self.splits: list[str] = []
        self.agreement_images = 0
        self.agreed_images = 0.0

    def resolve_data(self, spec, log=None, skip_bad_labels=False, splits=("train", "val")):
        from optkit.data import resolve_data

        return resolve_data(spec)

    def train_loader(self, data, names, imgsz, batch, workers, seed, fraction=1.0, rank=0, world=1,
                     cache=False, options=None):  # fmt: skip
        from optkit.data import ImageFolder, TrainTransform, build_train_loader

        dataset = ImageFolder(data.train_dir, TrainTransform(imgsz), classes=list(names))
        return build_train_loader(dataset, batch, workers, seed, fraction=fraction, rank=rank, world=world)

    def val_loader(self, data, names, imgsz, batch, workers, preprocess=None):
        from optkit.data import build_val_loader

        return build_val_loader(self.image_dataset(data, names, imgsz, "val", preprocess), batch, workers)

    def image_dataset(self, data, names, imgsz, split, preprocess=None):
        from optkit.data import ImageFolder, ValTransform

        self.splits.append(split)
        norm = {"mean": preprocess["mean"], "std": preprocess["std"]} if preprocess else {}
        folder = {"train": data.train_dir, "val": data.val_dir}[split]
        return ImageFolder(folder, ValTransform(imgsz, **norm), classes=list(names))

    def loss(self, options, model=None):
        return torch.nn.CrossEntropyLoss()

    def evaluate(self, model, loader, device, amp=False) -> dict:
        was_training = model.training
        model.eval()
        prob = loss = n = 0.0
        with torch.inference_mode():
            for images, labels in loader:
                logits = model(images.to(device)).float()
                prob += logits.softmax(1).gather(1, labels[:, None]).sum().item()
                loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
                n += len(labels)
        model.train(was_training)
        return {"score": prob / n, "loss": loss / n, "images": int(n)}

    def agreement(self, reference, output) -> float:
        same = (reference.topk(2).indices.sort(1).values == output.topk(2).indices.sort(1).values).all(1)
        self.agreement_images += len(same)
        self.agreed_images += same.sum().item()
        return same.float().mean().item()


def _score_task() -> Score:
    try:
        return get_task(TASK)
    except Exception:  # not registered yet in this process
        return register_task(Score())


def _ckpt(folder: Path, task: str) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    model = create_model("test-resnet", num_classes=3).train()
    with torch.no_grad():  # non-trivial BN statistics, so folding changes the weights
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32, task=task), folder / "float.pt")


def _raised_texts(path: Path) -> list[str]:
    """The literal text of every message a module raises (f-string parts included)."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            texts += [
                n.value
                for n in ast.walk(node.exc)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
    return texts


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_quant_library_names_no_flag_and_imports_no_flow(path):
    flagged = [t for t in _raised_texts(path) if FLAG.search(t)]
    assert not flagged, f"{path.name} words a CLI flag in an error: {flagged}"
    tree = ast.parse(path.read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    upward = [m for m in imported if m.startswith(("optkit.cli", "optkit.workflows", "optkit.report"))]
    assert upward in ([], ["optkit.report.progress"]), f"{path.name} imports {upward}"


@pytest.mark.parametrize(
    ("kwargs", "library", "flow"),
    [
        ({"method": "kl"}, "quantization method 'kl' is not known", "--method 'kl' is not known"),
        (
            {"percentile": 0.0},
            "quantization percentile must be in (0, 100]",
            "--percentile must be in (0, 100]",
        ),
    ],
)
def test_quant_config_carries_facts_and_the_flow_words_the_flag(kwargs, library, flow):
    from optkit.errors import ConfigError
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import quant_config

    with pytest.raises(ConfigError) as made:
        QuantConfig(**kwargs)
    assert str(made.value).startswith(library) and not FLAG.search(str(made.value))
    options = {"method": "mse", "percentile": 99.99, "per_channel": True, "skip": [], **kwargs}
    with pytest.raises(ConfigError) as worded:
        quant_config(**options)
    assert str(worded.value).startswith(flow)


def test_fidelity_counts_the_images_the_task_agrees_on():
    from optkit.quant.compare import fidelity

    classify = get_task("classify")
    torch.manual_seed(0)
    batches = [torch.randn(7, 6), torch.randn(5, 6)]  # "images" whose first/last 3 columns are the logits

    def reference(x):
        return x[:, :3]

    def other(x):
        return x[:, 3:]

    f = fidelity(reference, other, batches, classify, num_classes=3)
    agree = sum((x[:, :3].argmax(1) == x[:, 3:].argmax(1)).sum().item() for x in batches)
    assert f.images == 12 and f.agreement == agree / 12 and 0 < agree < 12
    assert fidelity(reference, other, batches).agreement is None  # no task: SQNR alone
    assert fidelity(reference, reference, batches, classify, 3).sqnr_db == float("inf")


def test_ptq_measures_fitness_and_agreement_by_the_task(tmp_path, tiny_data):
    from optkit.checkpoint import load_checkpoint
    from optkit.quant.config import QuantConfig
    from optkit.workflows.ptq import PtqRequest, run_ptq

    task = _score_task()
    task.splits.clear()
    task.agreement_images, task.agreed_images = 0, 0.0
    src = _ckpt(tmp_path, TASK)
    request = PtqRequest(
        str(src), str(tiny_data), num_images=24, quant=QuantConfig(method="max"), sensitivity=True,
        sensitivity_metric="top1", auto_skip=0.0, output=str(tmp_path / "q.pt"),
    )  # fmt: skip
    r = run_ptq(request)
    assert {"train", "val"} <= set(task.splits)
    assert "float_top1" not in r and 0 <= r["float_score"] <= 1 and 0 <= r["int8_score"] <= 1
    rows = r["sensitivity"]  # by the task's fitness, most sensitive (lowest) first
    assert all("top1" not in row and row["sqnr_db"] is None for row in rows)
    assert [row["score"] for row in rows] == sorted(row["score"] for row in rows)
    # --auto-skip 0: layers go float, most sensitive first, until no fitness point is lost
    assert r["auto_skipped"] == [row["layer"] for row in rows[: len(r["auto_skipped"])]]
    assert r["int8_score"] >= r["float_score"]
    assert task.agreement_images == r["val_images"] == 18
    assert r["top1_agreement"] == task.agreed_images / task.agreement_images
    assert set(load_checkpoint(tmp_path / "q.pt").lineage[-1]["metrics"]) >= {"float_score", "int8_score"}


def test_qat_reports_the_task_fitness(tmp_path, tiny_data):
    from optkit.workflows.ptq import PtqRequest, run_ptq
    from optkit.workflows.qat import QatRequest, run_qat

    _score_task()
    src = _ckpt(tmp_path, TASK)
    run_ptq(PtqRequest(str(src), str(tiny_data), num_images=16, output=str(tmp_path / "q.pt")))
    train = {"data": str(tiny_data), "epochs": 1, "batch_size": 16, "workers": 0,
             "project": str(tmp_path / "runs")}  # fmt: skip
    r = run_qat(QatRequest(str(tmp_path / "q.pt"), train, num_images=8))
    assert "qat_top1" not in r and "ptq_top1" not in r
    assert 0 <= r["float_score"] <= 1 and 0 <= r["ptq_score"] <= 1
    assert r["qat_score"] == r["best_score"]
