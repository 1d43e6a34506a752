"""Long commands say what they are doing on stderr (issue 13, defect 5): a line per step when stderr is
not a terminal, a Rich bar when it is; stdout stays one JSON object with --json. And ptq-calibrate warns
when it calibrates on very few images (defect 8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model

CLASSES = ["blue", "green", "red"]  # tiny_data's
ELAPSED = re.compile(r"\d:\d\d:\d\d")  # Rich's elapsed-time column: only a live bar shows it


def _ckpt(path: Path, name: str) -> Path:
    """A checkpoint with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return save_checkpoint(checkpoint_from_model(model.eval(), CLASSES, 32), path)


def _lines(err: str) -> list[str]:
    return err.strip().splitlines()


def _index(lines: list[str], start: str) -> int:
    """The position of the first line that starts with `start` (fails when there is none)."""
    found = [i for i, line in enumerate(lines) if line.startswith(start)]
    assert found, f"no line starting with {start!r} in:\n" + "\n".join(lines)
    return found[0]


@pytest.fixture
def terminal(monkeypatch):
    """stderr (and stdout) seen as a terminal by Rich, as in an interactive shell: the consoles are
    made anew (Rich decides at creation whether to draw live displays) and dropped afterwards."""
    from optkit.report import console

    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    console.err.cache_clear()
    console.out.cache_clear()
    yield
    console.err.cache_clear()
    console.out.cache_clear()


def test_prune_finetune_names_its_run_folder_and_shows_each_step(cli, tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _ckpt(tmp_path / "m.pt", "test-tiny")
    args = ("--structured", "--amount", "0.3", "--round-to", "4", "--data", tiny_data)
    r = cli("prune", src, *args, "--finetune-epochs", "2", "--batch-size", "16", "--workers", "0", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)  # stdout: the JSON object alone
    lines = _lines(r.err)
    order = [
        _index(lines, "timing latency before and after pruning"),
        _index(lines, f"top-1 before pruning on {tiny_data / 'val'}"),
        _index(lines, "top-1 after pruning"),
        _index(lines, "training -> "),
        _index(lines, "epoch   1  loss"),
        _index(lines, "epoch   2  loss"),
    ]
    assert order == sorted(order)
    run = lines[order[3]].removeprefix("training -> ")
    assert run == out["finetune_run"]
    assert Path(run).resolve().parent == (tmp_path / "runs" / "prune").resolve()
    assert (Path(run) / "weights" / "best.pt").is_file()


def test_prune_finetune_on_a_terminal_shows_the_epoch_bar(cli, tmp_path, tiny_data, monkeypatch, terminal):
    monkeypatch.chdir(tmp_path)
    src = _ckpt(tmp_path / "m.pt", "test-tiny")
    args = ("--data", tiny_data, "--finetune-epochs", "1", "--batch-size", "16", "--workers", "0")
    r = cli("prune", src, "--amount", "0.5", *args, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["finetune_run"] in r.err  # the run folder is named
    assert re.search(r"epoch 1 .*\d+/\d+", r.err) and ELAPSED.search(r.err)  # the epoch's live bar
    assert "top-1 before pruning" in r.err


def test_ptq_calibrate_shows_each_step(cli, tmp_path, tiny_data):
    src = _ckpt(tmp_path / "float.pt", "test-resnet")
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "32", "--sensitivity", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    lines = _lines(r.err)
    order = [
        _index(lines, "reading 32 calibration images"),
        _index(lines, "reading 18 val images"),
        _index(lines, "calibrating (mse) on 32 images"),
        _index(lines, "per-layer sensitivity (sqnr) of 9 layers"),
        _index(lines, "comparing float and INT8 on 18 val images"),
        _index(lines, "measuring ONNX activation ranges on 32 images"),
    ]
    assert order == sorted(order) and len(lines) == len(order)  # and no warning: 32 images are enough
    assert out["num_images"] == 32 and "notes" not in out


def test_ptq_calibrate_on_a_terminal_shows_bars(cli, tmp_path, tiny_data, terminal):
    src = _ckpt(tmp_path / "float.pt", "test-resnet")
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "32", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["num_images"] == 32
    assert "calibrating (mse) on 32 images" in r.err and "/32" in r.err and ELAPSED.search(r.err)


@pytest.mark.parametrize("num_images", ["1", "8"])
def test_ptq_calibrate_warns_on_few_images(cli, tmp_path, tiny_data, num_images):
    src = _ckpt(tmp_path / "float.pt", "test-resnet")
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", num_images, "--json")
    assert r.code == 0, r.err
    warnings = [line for line in _lines(r.err) if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"calibrating on {num_images} image" in warnings[0]
    assert f"--num-images {num_images}" in warnings[0] and "fewer than 32" in warnings[0]
    assert json.loads(r.out)["notes"] == [warnings[0].removeprefix("warning: ")]


def test_ptq_calibrate_warns_when_the_train_split_is_small(cli, tmp_path):
    from image_folders import write_image_folder

    data = write_image_folder(tmp_path / "small", CLASSES, per_class=4)  # 12 train images
    src = _ckpt(tmp_path / "float.pt", "test-resnet")
    r = cli("ptq-calibrate", src, "--data", data, "--json")  # asks for the default 512
    assert r.code == 0, r.err
    assert "warning: calibrating on 12 images (the train split has only 12)" in r.err


def test_qat_shows_the_steps_around_its_epochs(cli, tmp_path, tiny_data):
    src = _ckpt(tmp_path / "float.pt", "test-resnet")
    ptq = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "32", "-o", tmp_path / "q.pt")
    assert ptq.code == 0, ptq.err
    args = ("--data", tiny_data, "--epochs", "1", "--batch-size", "16", "--workers", "0")
    r = cli("qat", tmp_path / "q.pt", *args, "--project", tmp_path / "runs", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    lines = _lines(r.err)
    order = [
        _index(lines, "top-1 of the PTQ model (fake-quant INT8)"),
        _index(lines, "top-1 of the float model (quantization off)"),
        _index(lines, "note: distilling from the float model"),
        _index(lines, f"training -> {tmp_path / 'runs' / 'exp'}"),
        _index(lines, "epoch   1  loss"),
        _index(lines, f"re-measuring the ONNX activation ranges of {out['best']}"),
    ]
    assert order == sorted(order)


def test_profile_sweep_is_one_step_per_batch_size(cli, tmp_path):
    src = _ckpt(tmp_path / "m.pt", "test-tiny")
    r = cli("profile", src, "--batch-sizes", "1,2,4", "--runs", "2", "--warmup", "0", "--json")
    assert r.code == 0, r.err
    assert [row["batch_size"] for row in json.loads(r.out)["sweep"]] == [1, 2, 4]
    lines = _lines(r.err)
    order = [
        _index(lines, "profiling "),
        _index(lines, "counting params and FLOPs"),
        _index(lines, "timing 0 warm-up + 2 runs"),
        _index(lines, "sweep 2/3: batch 2"),
        _index(lines, "sweep 3/3: batch 4"),
    ]
    assert order == sorted(order) and len(lines) == len(order)  # batch 1 was timed above


def test_profile_on_a_terminal_shows_bars(cli, tmp_path, terminal):
    src = _ckpt(tmp_path / "m.pt", "test-tiny")
    r = cli("profile", src, "--batch-sizes", "1,2", "--runs", "2", "--warmup", "0", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["batch_size"] == 1
    assert "sweep 2/2: batch 2" in r.err and ELAPSED.search(r.err)


def test_benchmark_shows_each_accuracy_run_and_the_timing_rounds(cli, tmp_path, tiny_data):
    a, b = _ckpt(tmp_path / "a.pt", "test-tiny"), _ckpt(tmp_path / "b.pt", "test-concat")
    args = ("--data", tiny_data, "--rounds", "2", "--runs", "1", "--warmup", "1", "--json")
    r = cli("benchmark", a, b, *args)
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["rows"]) == 2
    lines = _lines(r.err)
    steps = [f"top-1 of {a}", f"top-1 of {b}", "timing 2 artifacts"]
    order = [_index(lines, step) for step in steps]
    assert order == sorted(order)
