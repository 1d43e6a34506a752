"""Training in channels-last on the CPU (optkit.train.memory_format): checkpoints stay contiguous and a
resumed optimizer state in another layout steps exactly as the uninterrupted run."""

from __future__ import annotations

import copy

import torch
from tiny_train import tiny_train_config

from optkit.checkpoint import load_checkpoint
from optkit.train.config import TrainConfig
from optkit.train.memory_format import match_parameter_layout, training_memory_format
from optkit.train.trainer import Trainer


def test_cpu_trains_channels_last():
    assert training_memory_format(torch.device("cpu")) is torch.channels_last
    assert training_memory_format(torch.device("cuda")) is torch.contiguous_format


def _adamw_step(param, state_dict, grad):
    """One fused AdamW step of `param` from a saved optimizer state; the updated values (NCHW)."""
    param = param.clone().requires_grad_()
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=True)
    optimizer.load_state_dict(copy.deepcopy(state_dict))  # loading aliases the saved tensors
    match_parameter_layout(optimizer)
    param.grad = torch.empty_like(param).copy_(grad)  # autograd gives a gradient the parameter's strides
    optimizer.step()
    return param.detach().contiguous()


def test_loaded_state_takes_the_parameter_layout():
    torch.manual_seed(0)
    weight, grad = torch.randn(8, 4, 3, 3), torch.randn(8, 4, 3, 3)
    saved = torch.optim.AdamW([weight.clone().requires_grad_()], lr=0.1, fused=True).state_dict()
    saved["state"] = {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(8, 4, 3, 3),
                          "exp_avg_sq": torch.rand(8, 4, 3, 3)}}  # fmt: skip
    reference = _adamw_step(weight, saved, grad)
    channels_last = _adamw_step(weight.contiguous(memory_format=torch.channels_last), saved, grad)
    torch.testing.assert_close(channels_last, reference, rtol=0, atol=1e-6)


def test_checkpoints_are_contiguous(tmp_path, tiny_data):
    run = Trainer(tiny_train_config(tmp_path, tiny_data, epochs=1)).run()
    for path in (run.best, run.last):
        ckpt = load_checkpoint(path)
        tensors = [*ckpt.model.values(), *(ckpt.ema or {}).values()]
        assert any(t.dim() == 4 for t in tensors)
        assert all(t.is_contiguous() for t in tensors), path


def test_resume_from_a_contiguous_optimizer_state_is_exact(tmp_path, tiny_data):
    """A last.pt whose optimizer state is NCHW (as optkit wrote before training in channels-last)
    resumes to the weights of the uninterrupted run."""
    straight = Trainer(tiny_train_config(tmp_path, tiny_data, name="straight")).run()
    first = Trainer(tiny_train_config(tmp_path, tiny_data, name="split", stop_after=1)).run()
    raw = torch.load(first.last, weights_only=True)
    state = raw["optimizer"]["state"]
    assert any(not v.is_contiguous() for s in state.values() for v in s.values() if torch.is_tensor(v))
    for s in state.values():
        s.update({name: v.contiguous() for name, v in s.items() if torch.is_tensor(v)})
    torch.save(raw, first.last)
    resumed = Trainer(TrainConfig(resume_from=str(first.last))).run()
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for key in a.model:
        torch.testing.assert_close(b.model[key], a.model[key], rtol=0, atol=1e-6, msg=key)
