"""val, and the accuracy that benchmark --data and prune --data measure, go through the model's task
(docs/architecture.md, "The task seam"): its data, its evaluation, its reading of outputs. A task this
optkit does not know is refused in one line by each of them."""

from __future__ import annotations

import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model
from optkit.tasks import Metric
from optkit.tasks.classify import Classify

NAMES = ["blue", "green", "red"]
VAL_IMAGES = 18  # tiny_data: 6 val images per class


class Counting(Classify):
    """A classifier under another name, whose one metric ("hits") is its own and which counts the model
    outputs it is asked to read."""

    name = "counting-classify"
    metrics = (Metric("hits", "hits", percent=True),)
    fitness_key = "hits"
    judges_each_image = False  # its evaluate replaces Classify's and takes no options

    def __init__(self) -> None:
        self.reads = 0

    def read_outputs(self, output, num_classes: int):
        self.reads += 1
        return super().read_outputs(output, num_classes)

    def evaluate(self, model, loader, device, amp: bool = False) -> dict:
        m = super().evaluate(model, loader, device, amp)
        return {"hits": m["top1"], "loss": m["loss"], "images": m["images"]}


@pytest.fixture
def counting(monkeypatch) -> Counting:
    """The Counting task, registered for this test only."""
    from optkit.tasks import base, load_builtin_tasks

    load_builtin_tasks()
    task = Counting()
    monkeypatch.setitem(base._TASKS, task.name, task)
    return task


def _checkpoint(path, task: str = "classify"):
    torch.manual_seed(0)
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=len(NAMES)).eval(), NAMES, 32)
    ckpt.task = task
    return save_checkpoint(ckpt, path)


def test_val_keys_and_table_of_a_classifier(cli, tiny_data, tmp_path):
    pt = _checkpoint(tmp_path / "m.pt")
    r = cli("val", pt, "--data", tiny_data, "--workers", "0", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert list(out) == [
        "weights", "data", "split", "imgsz", "device", "top1", "top5", "loss", "images", "seconds",
        "images_per_s", "task", "threads",
    ]  # fmt: skip
    assert out["task"] == "classify" and out["images"] == VAL_IMAGES and 0 <= out["top1"] <= out["top5"] <= 1
    table = cli("val", pt, "--data", tiny_data, "--workers", "0")
    assert table.code == 0 and "top-1" in table.out and "top-5" in table.out and "img/s" in table.out


def test_val_measures_through_the_models_task(cli, counting, tiny_data, tmp_path):
    reference = cli("val", _checkpoint(tmp_path / "c.pt"), "--data", tiny_data, "--workers", "0", "--json")
    pt = _checkpoint(tmp_path / "m.pt", counting.name)  # the same weights, another task
    r = cli("val", pt, "--data", tiny_data, "--workers", "0", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["task"] == counting.name and "top1" not in out and out["images"] == VAL_IMAGES
    assert out["hits"] == reference.json()["top1"] and counting.reads > 0
    table = cli("val", pt, "--data", tiny_data, "--workers", "0")
    assert table.code == 0 and "hits" in table.out and "top-1" not in table.out


def test_benchmark_and_prune_measure_through_the_models_task(cli, counting, tiny_data, tmp_path):
    pt = _checkpoint(tmp_path / "m.pt", counting.name)
    hits = cli("val", pt, "--data", tiny_data, "--workers", "0", "--json").json()["hits"]
    reads = counting.reads
    bench = cli("benchmark", pt, "--data", tiny_data, "--runs", "1", "--warmup", "0", "--json")
    assert bench.code == 0, bench.err
    assert bench.json()["rows"][0]["hits"] == hits and counting.reads > reads
    reads = counting.reads
    pruned = cli("prune", pt, "--amount", "0.3", "--data", tiny_data, "--workers", "0", "--json")
    assert pruned.code == 0, pruned.err
    assert pruned.json()["hits_before"] == hits and counting.reads > reads  # <fitness_key>_before


def test_onnx_val_reads_the_session_outputs_through_the_task(cli, tiny_data, tmp_path, monkeypatch):
    pt = _checkpoint(tmp_path / "m.pt")
    assert cli("export", pt, "-o", tmp_path / "m.onnx").code == 0
    reads = []
    read = Classify.read_outputs
    monkeypatch.setattr(Classify, "read_outputs", lambda self, o, n: reads.append(o) or read(self, o, n))
    r = cli("val", tmp_path / "m.onnx", "--data", tiny_data, "--workers", "0", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["runtime"] == "onnxruntime" and out["task"] == "classify" and out["images"] == VAL_IMAGES
    assert reads and all(o.shape[1] == len(NAMES) for o in reads)  # each batch the session returned
    from_pt = cli("val", pt, "--data", tiny_data, "--workers", "0", "--json").json()
    assert abs(out["top1"] - from_pt["top1"]) <= 1 / VAL_IMAGES  # same model, at most one image apart


@pytest.mark.parametrize(
    "command, args",
    [
        ("val", ["--workers", "0"]),
        ("benchmark --data", ["--runs", "1", "--warmup", "0"]),
        ("prune --data", ["--amount", "0.3", "--workers", "0"]),
    ],
)
def test_a_task_this_optkit_does_not_know_is_refused_in_one_line(cli, tiny_data, tmp_path, command, args):
    pt = _checkpoint(tmp_path / "m.pt", "segment")
    before = set(tmp_path.iterdir())
    r = cli(command.split()[0], pt, "--data", tiny_data, *args)
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {command}"), r.err
    assert "is a segment model" in lines[0] and "cannot measure segment models yet" in lines[0]
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_benchmark_refuses_a_val_split_without_images_before_any_step(cli, tmp_path):
    pt = _checkpoint(tmp_path / "m.pt")
    for split in ("train", "val"):
        for name in NAMES:
            (tmp_path / "empty" / split / name).mkdir(parents=True)
    r = cli("benchmark", pt, "--data", tmp_path / "empty", "--runs", "1", "--warmup", "0")
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and "no images" in lines[0], r.err
