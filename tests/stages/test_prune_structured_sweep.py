"""Structured pruning over a sweep of --amount: a higher amount never leaves a bigger model.

Torch-Pruning's own rounding sent a layer asked to keep fewer than `round_to` channels to 0 and then left
it whole, so yolo-cls-n kept 55,811 / 194,019 / 890,115 params at 0.85 / 0.92 / 0.97 and 0.999 removed
nothing. Now every layer stops at its minimum width; each message that says nothing was removed names
something that does remove channels, and the tests here follow it. The stage names its config's fields
and carries the field to change and a value of it that removes channels (NothingRemoved); `optkit prune`
says the same in its flags.
"""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
import torch
from torch import nn

from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.models import create_model
from optkit.stages.prune_structured import NothingRemoved, StructuredPruneConfig, prune_structured

NAMES = ["a", "b", "c"]
AMOUNTS = [0.1, 0.3, 0.5, 0.7, 0.85, 0.92, 0.97, 0.99, 0.999]
# (model, imgsz px, round_to): two zoo families at a small size, and the round_to=1 path on a tiny model
# with a concat and a residual add
CASES = [("yolo-cls-n", 32, 8), ("resnet18", 32, 8), ("test-concat", 64, 1)]


def _never_up(values: list) -> bool:
    return all(b <= a for a, b in pairwise(values))


def _never_down(values: list) -> bool:
    return all(b >= a for a, b in pairwise(values))


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-r{c[2]}")
def sweep(request):
    """The model and, per amount, (pruned model, transform entry)."""
    name, imgsz, round_to = request.param
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(NAMES)).eval()
    results = [
        prune_structured(model, StructuredPruneConfig(amount=a, round_to=round_to, imgsz=imgsz))
        for a in AMOUNTS
    ]
    return name, imgsz, round_to, model, results


def test_params_left_never_grow_and_achieved_never_falls(sweep):
    *_, results = sweep
    got = [entry["achieved"] for _, entry in results]
    params = [g["params_after"] for g in got]
    channels = [g["channel_reduction"] for g in got]
    weights = [g["prunable_weight_reduction"] for g in got]
    table = dict(zip(AMOUNTS, params, strict=True))
    assert _never_up(params), table
    assert _never_down(channels), dict(zip(AMOUNTS, channels, strict=True))
    assert _never_down(weights), dict(zip(AMOUNTS, weights, strict=True))
    assert weights[-1] > 0.9, table  # 0.999 really prunes: nearly all prunable weights go


def test_no_layer_gets_wider_and_the_top_amount_reaches_the_minimum_width(sweep):
    _, _, round_to, model, results = sweep
    widths = [_widths(pruned) for pruned, _ in results]
    for name, before in _widths(model).items():
        row = [w[name] for w in widths]
        assert _never_up(row), (name, dict(zip(AMOUNTS, row, strict=True)))
        assert all(w == before or w % round_to == 0 for w in row), (name, row)
        floor = before if before < round_to else round_to  # narrower than round_to: left whole
        assert min(row) >= floor, (name, row)
        assert row[-1] == floor, (name, before, row[-1])  # 0.999: every layer at its minimum width


def test_every_pruned_model_runs_and_reloads_from_its_checkpoint(sweep, tmp_path):
    _, imgsz, _, _, results = sweep
    x = torch.randn(2, 3, imgsz, imgsz)
    for amount, (pruned, entry) in zip(AMOUNTS, results, strict=True):
        path = save_checkpoint(
            checkpoint_from_model(pruned, NAMES, imgsz=imgsz, transforms=[entry]), tmp_path / f"{amount}.pt"
        )
        rebuilt = build_model(load_checkpoint(path))
        with torch.no_grad():
            y = pruned(x)
            assert y.shape == (2, len(NAMES)) and torch.isfinite(y).all(), amount
            assert torch.equal(rebuilt(x), y), amount


# --- when nothing is removed, the message says what would remove something, and following it works


def _prune(model, **kw):
    return prune_structured(model, StructuredPruneConfig(imgsz=32, **kw))


def _removes_channels(model, **kw) -> bool:
    pruned, _ = _prune(model, **kw)
    return sum(_widths(pruned).values()) < sum(_widths(model).values())


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    return create_model("yolo-cls-n", num_classes=len(NAMES)).eval()


def test_amount_zero_says_any_positive_amount_removes(yolo):
    with pytest.raises(
        NothingRemoved, match=r"^amount 0 .*any amount above 0 .*\(e\.g\. amount 0\.3\)$"
    ) as info:
        _prune(yolo, amount=0.0)
    assert (info.value.field, info.value.suggested) == ("amount", 0.3)
    assert _removes_channels(yolo, amount=info.value.suggested)


def test_a_too_small_amount_names_the_smallest_that_removes(yolo):
    with pytest.raises(NothingRemoved, match="too small") as info:
        _prune(yolo, amount=1e-17)  # 1280 * (1 - 1e-17) is still 1280 channels
    smallest = float(re.search(r"from amount ([0-9.e-]+) on", str(info.value)).group(1))
    assert (info.value.field, info.value.suggested) == ("amount", smallest)
    assert _removes_channels(yolo, amount=smallest)


@pytest.mark.parametrize("round_to", [8, 1])
def test_pruning_a_model_at_its_minimum_width_says_so(yolo, round_to):
    smallest, _ = _prune(yolo, amount=0.999, round_to=round_to)
    with pytest.raises(NothingRemoved, match="minimum width") as info:
        _prune(smallest, amount=0.999, round_to=round_to)
    if round_to == 1:
        assert "nothing more can be removed" in str(info.value)
        assert (info.value.field, info.value.suggested) == (None, None)
    else:
        lower = int(re.search(r"use round_to (\d+) or less", str(info.value)).group(1))
        assert (info.value.field, info.value.suggested) == ("round_to", lower)
        assert lower < round_to and _removes_channels(smallest, amount=0.999, round_to=lower)


def test_round_to_wider_than_every_layer_says_which_round_to_works(yolo):
    with pytest.raises(NothingRemoved, match="wider than every prunable layer") as info:
        _prune(yolo, amount=0.5, round_to=2048)  # the widest layer has 1280 channels
    lower = int(re.search(r"use round_to (\d+) or less", str(info.value)).group(1))
    assert (info.value.field, info.value.suggested) == ("round_to", lower)
    assert _removes_channels(yolo, amount=0.5, round_to=lower)


def test_the_stage_names_fields_not_flags(yolo):
    with pytest.raises(NothingRemoved) as info:
        _prune(yolo, amount=0.5, round_to=2048)
    assert "--" not in str(info.value) and "round_to 2048 is wider" in str(info.value)


def test_kept_channels_floor():
    from optkit.stages.prune_structured import kept_channels

    assert kept_channels(64, 0, 8) == 8  # rounded target 0: the minimum width, not the whole layer
    assert kept_channels(64, 5, 8) == 8
    assert kept_channels(64, 20, 8) == 16
    assert kept_channels(4, 1, 8) == 4  # narrower than round_to: no multiple fits, left whole
    assert kept_channels(16, 0, 1) == 1
    for width, round_to in [(64, 8), (20, 8), (7, 8), (16, 1), (1280, 8)]:
        kept = [kept_channels(width, asked, round_to) for asked in range(width, -1, -1)]
        assert _never_up(kept), (width, round_to)


# --- through the CLI: 0.999 prunes (no "raise --amount"), and pruning the result again names the way on


@pytest.fixture
def yolo_ckpt(tmp_path, yolo):
    return save_checkpoint(checkpoint_from_model(yolo, NAMES, 32), tmp_path / "y.pt")


def test_cli_amount_0999_prunes_more_than_097_and_then_says_minimum_width(cli, yolo_ckpt, tmp_path):
    prune = ("prune", yolo_ckpt, "--structured", "--json")
    r97 = cli(*prune, "--amount", "0.97", "-o", tmp_path / "p97.pt")
    r999 = cli(*prune, "--amount", "0.999", "-o", tmp_path / "p999.pt")
    assert r97.code == 0 and r999.code == 0, r97.err + r999.err
    assert r999.json()["params_after"] <= r97.json()["params_after"] < r97.json()["params_before"]
    assert r999.json()["channels_removed"] >= r97.json()["channels_removed"]

    again = cli("prune", tmp_path / "p999.pt", "--structured", "--amount", "0.999", "-o", tmp_path / "x.pt")
    assert again.code == 1 and not (tmp_path / "x.pt").exists()
    lines = again.err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "minimum width" in lines[-1], again.err
    assert "Traceback" not in again.err and "raise --amount" not in again.err
    assert len([line for line in lines if line.startswith("error")]) == 1
    lower = re.search(r"--round-to (\d+) or less", lines[-1]).group(1)
    followed = cli(
        "prune", tmp_path / "p999.pt", "--structured", "--amount", "0.999", "--round-to", lower,
        "-o", tmp_path / "x.pt", "--json",
    )  # fmt: skip
    assert followed.code == 0, followed.err
    assert followed.json()["params_after"] < r999.json()["params_after"]


# --- through the CLI, each of those messages names prune's flags, and following it works


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=len(NAMES)).eval()  # widest prunable layer: 64 channels
    return save_checkpoint(checkpoint_from_model(model, NAMES, 32), tmp_path / "t.pt")


def _error_line(r) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(
    "args, message, follow",
    [
        (
            ["--amount", "0"],
            r"--amount 0 removes no channels: any amount above 0 removes some \(e\.g\. --amount (0\.3)\)",
            "--amount",
        ),
        (
            ["--amount", "1e-17"],
            r"--amount 1e-17 is too small to remove a channel: from --amount ([0-9.e-]+) on, "
            r"model\.7\.conv\.conv \(64 channels\) loses at least one",
            "--amount",
        ),
        (
            ["--amount", "0.3", "--round-to", "1024"],
            r"--round-to 1024 is wider than every prunable layer \(the widest, model\.7\.conv\.conv, has 64 "
            r"channels\), and a pruned layer keeps a multiple of it: use --round-to (\d+) or less",
            "--round-to",
        ),
        (
            ["--amount", "0.3", "--ignore", "model.99"],
            r"--ignore 'model\.99' names no module of this model \(e\.g\. 'model\.2' or 'model\.2\.cv1'\)",
            None,
        ),
    ],
)
def test_cli_words_what_removes_channels_in_flags(cli, tiny_ckpt, tmp_path, args, message, follow):
    out = tmp_path / "out.pt"
    r = cli("prune", tiny_ckpt, "--structured", *args, "-o", out)
    match = re.fullmatch(message, _error_line(r))
    assert match, r.err
    assert not out.exists()
    if follow is not None:  # the value the message names removes channels
        args = [*args, follow, match.group(1)]  # a later flag overrides the earlier one
        followed = cli("prune", tiny_ckpt, "--structured", *args, "-o", out, "--json")
        assert followed.code == 0, followed.err
        assert followed.json()["params_after"] < followed.json()["params_before"]


def test_cli_bn_scale_on_a_model_without_batch_norm_names_the_importances_that_work(cli, tmp_path):
    from optkit.stages.fuse import FuseConfig, fuse, fuse_transform

    torch.manual_seed(0)
    fused, report = fuse(create_model("test-tiny", num_classes=len(NAMES)).eval(), FuseConfig(imgsz=32))
    ckpt = checkpoint_from_model(fused, NAMES, 32, transforms=[fuse_transform(report.fused)])
    path = save_checkpoint(ckpt, tmp_path / "fused.pt")
    prune = ("prune", path, "--structured", "--amount", "0.3", "-o", tmp_path / "out.pt")
    r = cli(*prune, "--importance", "bn-scale")
    assert _error_line(r) == (
        "--importance bn-scale ranks channels by their BatchNorm scale, and no prunable layer of this model "
        "has a BatchNorm: use --importance l1 or l2"
    )
    followed = cli(*prune, "--importance", "l1", "--json")
    assert followed.code == 0, followed.err
