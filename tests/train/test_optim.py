"""Parameter groups, warm-up and decay, gradient accumulation, EMA and early stopping."""

from __future__ import annotations

import math

import pytest
import torch

from optkit.models import create_model
from optkit.train.config import TrainConfig
from optkit.train.ema import ModelEMA
from optkit.train.optim import (
    accumulate_steps,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    set_schedule,
    split_params,
    warmup_iterations,
)
from optkit.train.stopper import EarlyStopper


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSProp"])
def test_three_groups_only_weights_decayed(name):
    model = create_model("test-tiny", num_classes=3)
    decay, norm, bias = split_params(model)
    assert len(decay) + len(norm) + len(bias) == len(list(model.parameters()))
    assert all(p.ndim > 1 for p in decay) and all(p.ndim == 1 for p in norm + bias)
    cfg = TrainConfig(model="test-tiny", optimizer=name, lr0=1e-3, weight_decay=1e-3)
    opt = build_optimizer(model, cfg, 64)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [len(decay), len(norm), len(bias)]


def test_accumulation_and_decay_scaling():
    cfg = TrainConfig(model="x", weight_decay=1e-3)
    assert accumulate_steps(16) == 4 and accumulate_steps(64) == 1 and accumulate_steps(256) == 1
    assert scaled_weight_decay(cfg, 16) == pytest.approx(1e-3)  # 16*4 = 64 images per step
    assert scaled_weight_decay(cfg, 256) == pytest.approx(4e-3)  # 4x the images per step


def test_linear_and_cosine_decay_end_at_lrf():
    lin = TrainConfig(model="x", lrf=0.01, epochs=10)
    cos = TrainConfig(model="x", lrf=0.01, epochs=10, cos_lr=True)
    assert lr_factor(0, 10, lin) == 1.0 and lr_factor(10, 10, lin) == pytest.approx(0.01)
    assert lr_factor(5, 10, lin) == pytest.approx(0.505)
    assert lr_factor(5, 10, cos) == pytest.approx((1 - math.cos(math.pi / 2)) / 2 * (0.01 - 1) + 1)
    assert lr_factor(10, 10, cos) == pytest.approx(0.01)


def test_warmup_ramps_lr_and_momentum():
    model = create_model("test-tiny", num_classes=3)
    cfg = TrainConfig(
        model="x", optimizer="SGD", lr0=0.01, momentum=0.9, warmup_momentum=0.5, warmup_bias_lr=0.1, epochs=10
    )
    opt = build_optimizer(model, cfg, 64)
    nb = 50
    warm = warmup_iterations(cfg, nb)
    assert warm == 100  # one epoch of 50 iterations, raised to the 100-iteration minimum
    set_schedule(opt, cfg, 0, 0, nb, warm)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[2]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.5)
    set_schedule(opt, cfg, 1, 0, nb, warm)  # iteration 50: half way
    target = 0.01 * lr_factor(1, 10, cfg)
    assert opt.param_groups[0]["lr"] == pytest.approx(target / 2)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.7)
    set_schedule(opt, cfg, 2, 10, nb, warm)  # after warm-up: all groups on the schedule
    assert {round(g["lr"], 12) for g in opt.param_groups} == {round(0.01 * lr_factor(2.2, 10, cfg), 12)}


def test_ema_follows_decay_formula():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    assert ema.ema.weight[0, 0].item() == pytest.approx(1 - d)


def test_early_stopper():
    s = EarlyStopper(patience=2)
    assert s.update(0, 0.5) and not s.update(1, 0.4) and not s.should_stop(1)
    assert not s.update(2, 0.5) and s.should_stop(2)
    assert s.state() == {"best_fitness": 0.5, "best_epoch": 0}


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # total norm well within, and far beyond, the limit
def test_clip_gradients_does_what_clip_grad_norm_does(scale):
    import torch

    from optkit.train.optim import clip_gradients

    torch.manual_seed(0)
    mine = [
        torch.nn.Parameter(torch.randn(7, 3)),
        torch.nn.Parameter(torch.randn(5)),
        torch.nn.Parameter(torch.ones(2)),
    ]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    for a, b in zip(mine, theirs, strict=True):
        a.grad = torch.randn_like(a) * scale
        b.grad = a.grad.clone()
    mine[2].grad = theirs[2].grad = None  # a parameter without a gradient is left alone
    norm = clip_gradients(mine, 10.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 10.0)
    assert norm == pytest.approx(float(expected), rel=1e-6)
    for a, b in zip(mine, theirs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)
    total = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in mine if p.grad is not None]))
    assert float(total) <= 10.0 + 1e-4
    if scale < 1:
        assert norm < 10.0 and all(
            torch.equal(a.grad, b.grad) for a, b in zip(mine[:2], theirs[:2], strict=True)
        )
