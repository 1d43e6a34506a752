"""fuse / prune / strip through the CLI: outputs, reported figures parsed back, reloads."""

from __future__ import annotations

import pytest
import torch

from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.models import create_model


@pytest.fixture
def trained_ckpt(tmp_path):
    """A test-tiny checkpoint with non-trivial BatchNorm statistics (so fusing is a real test)."""
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return save_checkpoint(
        checkpoint_from_model(model.eval(), ["blue", "green", "red"], 32), tmp_path / "m.pt"
    )


def test_fuse_writes_default_name_and_matches(cli, trained_ckpt):
    r = cli("fuse", trained_ckpt, "--json")
    assert r.code == 0, r.err
    out = r.json()
    fused_path = trained_ckpt.with_name("m-fused.pt")
    assert out["output"] == str(fused_path) and len(out["fused"]) == 16 and out["bn_left"] == {}
    assert out["max_rel"] <= 1e-4 and out["params_after"] < out["params_before"]
    fused = load_checkpoint(fused_path)
    assert fused.transforms[-1]["kind"] == "fuse" and fused.lineage[-1]["stage"] == "fuse"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = build_model(load_checkpoint(trained_ckpt))(x), build_model(fused)(x)
    assert torch.allclose(a, b, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build_model(fused).modules())


def test_fuse_no_check_and_bad_atol(cli, trained_ckpt, tmp_path):
    r = cli("fuse", trained_ckpt, "--no-check", "-o", tmp_path / "f.pt", "--json")
    assert r.code == 0 and r.json()["max_abs"] is None
    r = cli("fuse", trained_ckpt, "--atol", "0", "-o", tmp_path / "g.pt")
    assert r.code == 1 and "--atol" in r.err and not (tmp_path / "g.pt").exists()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_unstructured_hits_amount(cli, trained_ckpt, scope):
    r = cli("prune", trained_ckpt, "--amount", "0.5", "--scope", scope, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert abs(out["achieved"] - 0.5) <= 0.01
    if scope == "layer":
        assert all(abs(z / t - 0.5) <= 0.01 for z, t in out["layers"].values())
    pruned = load_checkpoint(trained_ckpt.with_name("m-pruned.pt"))
    assert pruned.transforms[-1]["kind"] == "sparsity" and pruned.lineage[-1]["stage"] == "prune"
    head = pruned.model["model.7.linear.weight"]
    assert torch.equal(head, load_checkpoint(trained_ckpt).model["model.7.linear.weight"])  # head kept dense


def test_prune_structured_reports_and_reloads(cli, trained_ckpt, tmp_path):
    r = cli(
        "prune",
        trained_ckpt,
        "--structured",
        "--amount",
        "0.3",
        "--round-to",
        "4",
        "-o",
        tmp_path / "s.pt",
        "--json",
    )
    assert r.code == 0, r.err
    out = r.json()
    assert out["params_after"] < out["params_before"] and out["gflops_after"] < out["gflops_before"]
    assert out["latency_before_ms"] > 0 and out["channels_removed"] > 0
    model = build_model(load_checkpoint(tmp_path / "s.pt"))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_prune_finetune_keeps_zeros_and_reports_top1(cli, trained_ckpt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli(
        "prune",
        trained_ckpt,
        "--amount",
        "0.5",
        "--data",
        tiny_data,
        "--finetune-epochs",
        "2",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "-o",
        tmp_path / "ft.pt",
        "--json",
    )
    assert r.code == 0, r.err
    out = r.json()
    assert {"top1_before", "top1_pruned", "top1_finetuned"} <= set(out)
    tuned = load_checkpoint(tmp_path / "ft.pt")
    assert [e["stage"] for e in tuned.lineage] == ["prune", "train"]
    names = tuned.transforms[-1]["params"]
    zeros = sum((tuned.model[n] == 0).sum().item() for n in names)
    total = sum(tuned.model[n].numel() for n in names)
    assert zeros / total >= 0.49  # the pruned weights stayed zero through fine-tuning


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--amount", "1.0"), "--amount must be in [0, 1)"),
        (("--amount", "-0.1"), "--amount must be in [0, 1)"),
        (("--scope", "model"), "--scope must be global or layer"),
        (("--finetune-epochs", "2"), "needs N >= 0 and --data"),
        (("--structured", "--importance", "random"), "importance"),
        (("--ignore", "model.99"), "model.99"),
    ],
)
def test_prune_bad_options_write_nothing(cli, trained_ckpt, args, fragment):
    before = trained_ckpt.read_bytes()
    r = cli("prune", trained_ckpt, *args)
    assert r.code == 1 and fragment in r.err and r.err.count("\n") == 1, r.err
    assert not trained_ckpt.with_name("m-pruned.pt").exists()
    assert trained_ckpt.read_bytes() == before
