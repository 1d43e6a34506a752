"""ResNet-18, the torchvision architecture (11,689,512 parameters at 1000 classes) in optkit's layout:
`model = Sequential(stem, layer1, layer2, layer3, layer4, head)`.

Differences from torchvision are names only (`cv1.conv` for `conv1`, `shortcut` for `downsample`,
`model.5.linear` for `fc`). BatchNorm keeps torch's defaults (eps 1e-5, momentum 0.1) as torchvision
does. The activation defaults to ReLU, ResNet's own; `act` swaps every one of them.
"""

from __future__ import annotations

import torch
from torch import nn

from optkit.models.activations import check_act, make_act
from optkit.models.blocks import Classify, Conv
from optkit.models.options import check_bool, check_dropout
from optkit.models.parts import HeadedSequential
from optkit.models.registry import register_model
from optkit.models.weight_init import init_torchvision_style


class Stem(Conv):
    """Conv -> BN -> act -> 3x3/2 max-pool: 4x downsampling. A `Conv`, so fusing code treats it as one."""

    def __init__(self, c1: int, c2: int, k: int = 7, s: int = 2, act: str = "relu") -> None:
        super().__init__(c1, c2, k, s, act=act)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward(x))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward_fuse(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (identity, or 1x1 conv + BN if the shape changes); act after the add."""

    def __init__(self, c1: int, c2: int, s: int = 1, act: str = "relu") -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, s, act=act)
        self.cv2 = Conv(c2, c2, 3, 1, act=None)
        self.shortcut = Conv(c1, c2, 1, s, act=None) if s != 1 or c1 != c2 else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.cv2(self.cv1(x)) + self.shortcut(x))


def _layer(c1: int, c2: int, n: int, s: int, act: str) -> nn.Sequential:
    """n BasicBlocks; the first one changes channels c1 -> c2 and downsamples by s."""
    return nn.Sequential(*(BasicBlock(c1 if j == 0 else c2, c2, s if j == 0 else 1, act) for j in range(n)))


class ResNet(HeadedSequential):
    stride = 32  # pixels: stem 4x, then layer2..layer4 2x each

    def __init__(
        self,
        num_classes: int,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        act: str = "relu",
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_act(act)
        layers: list[nn.Module] = [Stem(3, widths[0], act=act)]
        c1 = widths[0]
        for i, (n, c2) in enumerate(zip(blocks, widths, strict=True)):
            s = 1 if i == 0 else 2
            layers.append(_layer(c1, c2, n, s, act))
            c1 = c2
        layers.append(Classify(c1, num_classes, c_=None, dropout=check_dropout(dropout)))
        self.model = nn.Sequential(*layers)
        init_torchvision_style(self)
        if check_bool("zero_init_residual", zero_init_residual):
            # Each block starts as the identity: helps large-batch training (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.cv2.bn.weight)


@register_model(
    "resnet18", default_imgsz=224, description="ResNet-18, torchvision architecture (11.7M params)"
)
def resnet18(
    num_classes: int = 10, act: str = "relu", dropout: float = 0.0, zero_init_residual: bool = False
) -> ResNet:
    return ResNet(num_classes, (2, 2, 2, 2), (64, 128, 256, 512), act, dropout, zero_init_residual)
