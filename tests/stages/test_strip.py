"""strip: training state removed, EMA becomes the model, fp16 option, still fine-tunable."""

from __future__ import annotations

import pytest
import torch

from optkit.checkpoint import build_model, load_checkpoint
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer


@pytest.fixture
def last_pt(tmp_path, tiny_data):
    cfg = TrainConfig(
        model="test-tiny",
        data=str(tiny_data),
        epochs=1,
        imgsz=32,
        batch_size=16,
        workers=0,
        optimizer="Adam",
        project=str(tmp_path / "runs"),
    )
    return Trainer(cfg).run().last


def test_strip_adam_checkpoint_is_small_and_equivalent(cli, last_pt, tmp_path):
    r = cli("strip", last_pt, "--json")
    assert r.code == 0, r.err
    out = r.json()
    stripped_path = last_pt.with_name("last-stripped.pt")
    assert out["output"] == str(stripped_path)
    assert out["bytes_after"] < 0.4 * out["bytes_before"]  # Adam keeps 2 moments + EMA: the model is < 40%
    assert set(out["dropped"]) == {"ema (became the model)", "optimizer", "resume state"}
    stripped, source = load_checkpoint(stripped_path), load_checkpoint(last_pt)
    assert stripped.optimizer is None and stripped.ema is None and stripped.train_args is None
    assert stripped.lineage[-1]["stage"] == "strip"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the stripped model is the source's EMA model
        assert torch.equal(build_model(stripped)(x), build_model(source, weights="ema")(x))
    assert torch.load(stripped_path, weights_only=True)["format"]


def test_strip_half_and_fine_tune_from_it(cli, last_pt, tmp_path, tiny_data):
    r = cli("strip", last_pt, "--half", "-o", tmp_path / "half.pt", "--json")
    assert r.code == 0, r.err
    half = load_checkpoint(tmp_path / "half.pt")
    assert {v.dtype for v in half.model.values() if v.dtype.is_floating_point} == {torch.float16}
    x = torch.randn(2, 3, 32, 32)
    full = build_model(load_checkpoint(last_pt), weights="ema")
    with torch.no_grad():
        assert torch.allclose(build_model(half)(x), full(x), atol=5e-2, rtol=1e-2)
    cfg = TrainConfig(
        weights=str(tmp_path / "half.pt"),
        data=str(tiny_data),
        epochs=1,
        batch_size=16,
        workers=0,
        project=str(tmp_path / "ft"),
    )
    result = Trainer(cfg).run()
    tuned = load_checkpoint(result.last)
    assert tuned.optimizer is not None  # a fresh optimizer was created
    assert [e["stage"] for e in tuned.lineage] == ["train", "strip", "train"]


def test_strip_never_overwrites_input_by_default(cli, last_pt):
    before = last_pt.read_bytes()
    assert cli("strip", last_pt).code == 0
    assert last_pt.read_bytes() == before
    assert cli("strip", last_pt, "-o", last_pt).code == 0  # explicit: allowed
    assert load_checkpoint(last_pt).optimizer is None
