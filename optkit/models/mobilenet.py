"""MobileNetV2, the torchvision architecture (3,504,872 parameters at 1000 classes) in optkit's layout:
`model = Sequential(stem, stage1, ..., stage7, head)`, one stage per row of the paper's table.

torchvision's last 1x1 conv (320 -> 1280 channels) is the 1x1 Conv inside the `Classify` head, so
`model[-1].linear` is the classifier as in every optkit model. BatchNorm keeps torch's defaults
(eps 1e-5, momentum 0.1) as torchvision does. The activation defaults to ReLU6, MobileNetV2's own;
the projection conv of each block stays linear whatever `act` is (the "linear bottleneck").
"""

from __future__ import annotations

import torch
from torch import nn

from optkit.models.activations import check_act
from optkit.models.blocks import Classify, Conv
from optkit.models.options import check_dropout, check_positive
from optkit.models.parts import HeadedSequential
from optkit.models.registry import register_model
from optkit.models.weight_init import init_torchvision_style

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper, Table 2.
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def round_channels(v: float, divisor: int = 8) -> int:
    """torchvision's rounding: to the nearest multiple of `divisor`, never more than 10% below `v`.
    (YOLO's `make_divisible` rounds up instead; the parameter count depends on the difference.)"""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t == 1) -> 3x3 depthwise (stride s) -> 1x1 linear projection; residual add
    when the shape is kept."""

    def __init__(self, c1: int, c2: int, s: int, t: int, act: str = "relu6") -> None:
        super().__init__()
        hidden = int(round(c1 * t))
        self.expand = Conv(c1, hidden, 1, act=act) if t != 1 else nn.Identity()
        self.dw = Conv(hidden, hidden, 3, s, g=hidden, act=act)
        self.project = Conv(hidden, c2, 1, act=None)
        self.add = s == 1 and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.add else y


def _stage(c1: int, c2: int, n: int, s: int, t: int, act: str) -> nn.Sequential:
    """n inverted residuals; the first one changes channels c1 -> c2 and downsamples by s."""
    blocks = (InvertedResidual(c1 if i == 0 else c2, c2, s if i == 0 else 1, t, act) for i in range(n))
    return nn.Sequential(*blocks)


class MobileNetV2(HeadedSequential):
    stride = 32  # pixels: stem 2x, then four stride-2 stages

    def __init__(
        self, num_classes: int, width_multiple: float = 1.0, act: str = "relu6", dropout: float = 0.2
    ) -> None:
        super().__init__()
        check_act(act)
        width_multiple = check_positive("width_multiple", width_multiple)
        c1 = round_channels(32 * width_multiple)
        layers: list[nn.Module] = [Conv(3, c1, 3, 2, act=act)]
        for t, c, n, s in _STAGES:
            c2 = round_channels(c * width_multiple)
            layers.append(_stage(c1, c2, n, s, t, act))
            c1 = c2
        c_ = round_channels(1280 * max(1.0, width_multiple))  # the head is never narrowed, as in the paper
        layers.append(Classify(c1, num_classes, c_, check_dropout(dropout), act=act))
        self.model = nn.Sequential(*layers)
        init_torchvision_style(self)
        self._init_linear()

    def _init_linear(self) -> None:
        # torchvision: classifier weights N(0, 0.01), zero bias.
        nn.init.normal_(self.model[-1].linear.weight, 0, 0.01)
        nn.init.zeros_(self.model[-1].linear.bias)


@register_model(
    "mobilenet-v2", default_imgsz=224, description="MobileNetV2, torchvision architecture (3.5M params)"
)
def mobilenet_v2(
    num_classes: int = 10, act: str = "relu6", width_multiple: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    return MobileNetV2(num_classes, width_multiple, act, dropout)
