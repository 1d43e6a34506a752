"""Layer kinds the stages agree on."""

from __future__ import annotations


def weight_layer_types() -> tuple[type, ...]:
    """Conv / transposed conv / linear modules: the layers with a weight that pruning counts and that a
    following BatchNorm folds into."""
    from torch import nn

    return (
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.Linear,
    )
