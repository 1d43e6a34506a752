"""Exponential moving average of a model's weights and buffers (what best.pt deploys)."""

from __future__ import annotations

import copy
import math


class ModelEMA:
    """ema = d*ema + (1-d)*model after each optimizer step, with d = decay*(1 - exp(-updates/tau)).

    The ramp keeps the average from being dominated by the random initial weights early on.
    """

    def __init__(self, model, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.current_decay()
        with torch.no_grad():
            model_state = model.state_dict()
            floats_ema, floats_model = [], []
            for name, v in self.ema.state_dict().items():
                src = model_state[name].detach()
                if v.dtype.is_floating_point:
                    floats_ema.append(v)
                    floats_model.append(src)
                else:  # integer buffers (BatchNorm's num_batches_tracked) are copied
                    v.copy_(src)
            torch._foreach_lerp_(floats_ema, floats_model, 1.0 - d)
