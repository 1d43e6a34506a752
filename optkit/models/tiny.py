"""Tiny models for tests (`is_test=True`, hidden from `list_models()`): < 50k parameters, a few
milliseconds at 32-64 px, stride 32 like the real families, and each one built to exercise one
structure that optimization stages must handle:

- test-tiny:   Conv / C3 (internal concat, residual bottlenecks) / Classify with a 1x1 conv, as YOLO.
- test-resnet: BasicBlocks with an identity residual and a 1x1-conv downsample shortcut, as ResNet.
- test-concat: blocks whose *output* is a channel concat of branches (ConcatBranches, SPPF), the case
               channel pruning must map back onto each branch.
"""

from __future__ import annotations

import torch
from torch import nn

from optkit.models.activations import check_act
from optkit.models.blocks import C3, SPPF, Classify, Conv
from optkit.models.options import check_dropout
from optkit.models.parts import HeadedSequential
from optkit.models.registry import register_model
from optkit.models.resnet import BasicBlock, Stem


class ConcatBranches(nn.Module):
    """Two parallel convs (1x1 and 3x3) over the same input; output = their channel concat (c2 channels)."""

    def __init__(self, c1: int, c2: int, act: str = "silu") -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2 // 2, 1, 1, act=act)
        self.cv2 = Conv(c1, c2 - c2 // 2, 3, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv1(x), self.cv2(x)), dim=1)


class TinyNet(HeadedSequential):
    """`model = Sequential(*layers)`; the last layer must be a Classify."""

    stride = 32  # pixels: five stride-2 layers in every tiny model

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)


@register_model("test-tiny", default_imgsz=32, description="tiny Conv/C3 classifier for tests", is_test=True)
def test_tiny(num_classes: int = 10, act: str = "silu", dropout: float = 0.0) -> TinyNet:
    check_act(act)
    return TinyNet(
        [
            Conv(3, 8, 3, 2, act=act),  # /2
            Conv(8, 16, 3, 2, act=act),  # /4
            C3(16, 16, n=1, act=act),
            Conv(16, 32, 3, 2, act=act),  # /8
            C3(32, 32, n=1, act=act),
            Conv(32, 32, 3, 2, act=act),  # /16
            Conv(32, 48, 3, 2, act=act),  # /32
            Classify(48, num_classes, c_=64, dropout=check_dropout(dropout), act=act),
        ]
    )


@register_model(
    "test-resnet", default_imgsz=32, description="tiny 2-BasicBlock ResNet for tests", is_test=True
)
def test_resnet(num_classes: int = 10, act: str = "relu") -> TinyNet:
    check_act(act)
    return TinyNet(
        [
            Stem(3, 8, k=3, s=2, act=act),  # /4 (conv /2, max-pool /2)
            BasicBlock(8, 8, 1, act),  # identity shortcut
            BasicBlock(8, 16, 2, act),  # /8, 1x1 conv shortcut
            Conv(16, 32, 3, 2, act=act),  # /16
            Conv(32, 64, 3, 2, act=act),  # /32
            Classify(64, num_classes, c_=None),
        ]
    )


@register_model(
    "test-concat", default_imgsz=32, description="tiny concat-output classifier for tests", is_test=True
)
def test_concat(num_classes: int = 10, act: str = "silu") -> TinyNet:
    check_act(act)
    return TinyNet(
        [
            Conv(3, 8, 3, 2, act=act),  # /2
            Conv(8, 16, 3, 2, act=act),  # /4
            ConcatBranches(16, 24, act=act),  # 12 + 12 channels
            Conv(24, 32, 3, 2, act=act),  # /8
            SPPF(32, 32, act=act),  # concat of 4 x 16 channels inside
            Conv(32, 32, 3, 2, act=act),  # /16
            ConcatBranches(32, 32, act=act),
            Conv(32, 48, 3, 2, act=act),  # /32
            Classify(48, num_classes, c_=64, act=act),
        ]
    )
