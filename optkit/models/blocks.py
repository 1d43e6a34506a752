"""YOLO-style building blocks (after the Ultralytics YOLOv5 `common.py` design).

Every convolution is a `Conv`: Conv2d without bias -> BatchNorm2d -> activation, with submodules
named `.conv`, `.bn`, `.act`, so fusing and pruning code can find Conv->BN pairs by name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from optkit.models.activations import make_act

# BatchNorm settings YOLO trains with: eps 1e-3 (more stable in fp16), momentum 0.03
# (running statistics follow the slowly-changing weights of an EMA-trained model).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """Padding that keeps the spatial size ('same') for an odd kernel `k` with dilation `d`."""
    if p is not None:
        return p
    k = d * (k - 1) + 1  # effective kernel size
    return k // 2


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round a channel count up to a multiple of `divisor` (YOLO rounding; fast on hardware)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d(bias=False) -> BatchNorm2d -> activation (`act=None`: no activation)."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: str | None = "silu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), dilation=d, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_act(act) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward after BatchNorm has been folded into `.conv` (the fuse stage switches to this)."""
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 (or kxk) conv to `e*c2` channels, 3x3 conv back to c2; adds the input when shapes allow."""

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5, act: str = "silu"
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)  # hidden channels
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c_, c2, 3, 1, g=g, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convs: two 1x1 branches (one through n Bottlenecks), concat, 1x1 to c2."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        act: str = "silu",
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)  # hidden channels per branch
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.cv3 = Conv(2 * c_, c2, 1, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, act=act) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained kxk max-pools, all four maps concatenated.
    Equivalent to SPP with kernels (k, 2k-1, 3k-2); keeps the spatial size."""

    def __init__(self, c1: int, c2: int, k: int = 5, act: str = "silu") -> None:
        super().__init__()
        c_ = c1 // 2  # hidden channels
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c_ * 4, c2, 1, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), dim=1))


class Classify(nn.Module):
    """Classification head: [1x1 Conv to c_] -> global average pool -> flatten -> dropout -> Linear.

    `c_=None` leaves out the 1x1 Conv (ResNet's head); `self.linear` always makes the logits.
    Adaptive pooling makes the head work for any input size.
    """

    output_layers = ("linear",)  # its outputs are the model's (optkit.models.parts)

    def __init__(
        self, c1: int, c2: int, c_: int | None = 1280, dropout: float = 0.0, act: str = "silu"
    ) -> None:
        super().__init__()
        self.conv = Conv(c1, c_, 1, 1, act=act) if c_ is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout)
        self.linear = nn.Linear(c_ if c_ is not None else c1, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
