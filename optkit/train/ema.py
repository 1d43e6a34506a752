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
        self._pairs = None  # built at the first update, after the model has moved to its device

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    def update(self, model) -> None:
        import torch

        self.updates += 1
        if self._pairs is None:
            self._pairs = self._pair_tensors(model)
        ema_floats, model_floats, ema_ints, model_ints = self._pairs
        with torch.no_grad():
            torch._foreach_lerp_(ema_floats, model_floats, 1.0 - self.current_decay())
            for dst, src in zip(ema_ints, model_ints, strict=True):  # BatchNorm's num_batches_tracked
                dst.copy_(src)

    def _pair_tensors(self, model) -> tuple[list, list, list, list]:
        """Matching (ema, model) state tensors, floats and integers apart, found once: training
        updates parameters and buffers in place, so the same tensors stay valid every step."""
        model_state = model.state_dict()
        ema_floats, model_floats, ema_ints, model_ints = [], [], [], []
        for name, v in self.ema.state_dict().items():
            src = model_state[name]
            if v.dtype.is_floating_point:
                ema_floats.append(v)
                model_floats.append(src)
            else:
                ema_ints.append(v)
                model_ints.append(src)
        return ema_floats, model_floats, ema_ints, model_ints
