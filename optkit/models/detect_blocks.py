"""Blocks of the anchor-free YOLO detector (the published YOLOv8 design, written from its description).

- `Bottleneck3x3`: two 3x3 Convs with a residual add (the bottleneck inside C2f).
- `C2f`: a 1x1 Conv to 2c channels, split in halves; the second half runs through n bottlenecks, each
  output kept; every piece is concatenated and a 1x1 Conv mixes them (a "cross-stage partial" block
  with all intermediate maps reaching the output).
- `Concat`, nn.Upsample: the PAN neck's joins (channel concat of the maps a `from` table names).
- `DFL`: distribution focal loss decoding: softmax over 16 bins, expectation of the bin index.
- `Detect`: the decoupled head, per level a box branch (to 4 x 16 DFL logits) and a class branch (to nc
  logits); `raw` (training output), `decode` (eval output: the Ultralytics ONNX layout), `forward`.

Anchor geometry and box <-> distance conversions come from `optkit.models.anchors` (shared with the loss).
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

from optkit.errors import ModelError
from optkit.models.anchors import dist_to_xywh, make_anchors
from optkit.models.blocks import Conv

REG_MAX = 16  # DFL bins per box side: distances 0..15 strides
STRIDES = (8, 16, 32)  # pixels per cell of the head's three levels (P3, P4, P5)
BIAS_IMGSZ = 640  # pixels: the class-bias prior assumes this input size (as the published design)
PRIOR_OBJECTS = 5  # objects expected per 640 px image by the class-bias prior


class Bottleneck3x3(nn.Module):
    """3x3 Conv to c2 -> 3x3 Conv to c2 (hidden width e*c2); adds the input when `shortcut` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0, act: str = "silu") -> None:
        super().__init__()
        c_ = int(c2 * e)  # hidden channels
        self.cv1 = Conv(c1, c_, 3, 1, act=act)
        self.cv2 = Conv(c_, c2, 3, 1, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with 2 convs: cv1 (1x1, to 2c) -> halves (a, b); b -> n bottlenecks, keeping each output;
    cv2 (1x1) over cat(a, b, m1(b), m2(m1(b)), ...), (2 + n) * c channels -> c2. c = e * c2."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5, act: str = "silu"
    ) -> None:
        super().__init__()
        self.c = int(c2 * e)  # hidden channels per piece
        self.cv1 = Conv(c1, 2 * self.c, 1, 1, act=act)
        self.cv2 = Conv((2 + n) * self.c, c2, 1, 1, act=act)
        self.m = nn.ModuleList(Bottleneck3x3(self.c, self.c, shortcut, e=1.0, act=act) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = self.cv1(x).split((self.c, self.c), 1)  # indexed, not unpacked: fx traces getitem
        pieces = [halves[0], halves[1]]
        for block in self.m:
            pieces.append(block(pieces[-1]))
        return self.cv2(torch.cat(pieces, 1))


class Concat(nn.Module):
    """Channel concat of the maps the model's `from` table routes to this block."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)


class DFL(nn.Module):
    """Box-side distances from DFL logits: softmax over `bins` bins, expectation of the bin index.

    Input [B, 4 * bins, N] (sides l, t, r, b, `bins` logits each); output [B, 4, N] in strides. The bin
    indices 0..bins-1 are a fixed, non-persistent buffer: nothing to train, prune, quantize or store.
    """

    def __init__(self, bins: int = REG_MAX) -> None:
        super().__init__()
        self.bins = bins
        self.register_buffer("index", torch.arange(bins, dtype=torch.float32).view(1, 1, bins, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.view(x.shape[0], 4, self.bins, -1).softmax(2)
        return (p * self.index.to(p.dtype)).sum(2)


@torch.fx.wrap  # a leaf of fx graphs: it reads the maps' shapes, which fx cannot turn into numbers
def boxes_in_pixels(distances: torch.Tensor, raw: list[torch.Tensor], strides: tuple[int, ...]):
    """DFL distances [B, 4, N] (strides; l, t, r, b) of the cells of `raw`'s maps -> boxes [B, 4, N]
    (centre x, centre y, width, height) in input pixels. Anchors come from the maps' shapes with torch
    ops, so a traced (ONNX) graph computes them for any input size."""
    shapes = [(r.shape[2], r.shape[3]) for r in raw]
    points, point_strides = make_anchors(shapes, strides, dtype=distances.dtype, device=distances.device)
    return dist_to_xywh(distances, points.T, dim=1) * point_strides.T  # cells -> pixels


def _branch(c1: int, c_: int, c2: int, act: str) -> nn.Sequential:
    """Conv3x3 -> Conv3x3 -> Conv2d 1x1 (with bias: the output layer)."""
    return nn.Sequential(Conv(c1, c_, 3, 1, act=act), Conv(c_, c_, 3, 1, act=act), nn.Conv2d(c_, c2, 1))


class Detect(nn.Module):
    """Decoupled anchor-free head over three levels (strides 8, 16, 32).

    Per level i: box branch -> 4 * reg_max DFL logits, class branch -> nc logits, both from feature map
    i. Widths (the published rule): box c2 = max(16, ch[0] // 4, 4 * reg_max), class c3 = max(ch[0],
    min(nc, 100)); `box_width` / `cls_width` override them (tiny test models).
    """

    reg_max = REG_MAX
    strides = STRIDES
    # the final 1x1 convs: their output channels are the box and class layout (optkit.models.parts)
    output_layers = tuple(f"{kind}.{i}.2" for kind in ("box", "cls") for i in range(len(STRIDES)))
    class_layers = tuple(f"cls.{i}.2" for i in range(len(STRIDES)))  # what other classes re-initialise
    # post-processing INT8 keeps float (optkit.quant.float_scope): its modules (the DFL decode), and the
    # words for all that decode() computes after the output layers
    float_layers = ("dfl",)
    float_ops = "DFL decode, class sigmoid, box decode, final concat"

    def __init__(
        self,
        nc: int,
        ch: tuple[int, ...],
        act: str = "silu",
        box_width: int | None = None,
        cls_width: int | None = None,
    ) -> None:
        super().__init__()
        if len(ch) != len(self.strides):
            raise ModelError(
                f"Detect takes {len(self.strides)} feature maps (strides 8, 16, 32), got {len(ch)}"
            )
        self.nc = nc
        c2 = box_width or max(16, ch[0] // 4, 4 * self.reg_max)
        c3 = cls_width or max(ch[0], min(nc, 100))
        self.box = nn.ModuleList(_branch(c, c2, 4 * self.reg_max, act) for c in ch)
        self.cls = nn.ModuleList(_branch(c, c3, nc, act) for c in ch)
        self.dfl = DFL(self.reg_max)
        self.init_biases()

    def init_biases(self) -> None:
        """Box logits start flat (bias 1.0); class probabilities start near the prior of PRIOR_OBJECTS
        objects among all cells of a 640 px image at that level's stride, so early training is not
        swamped by confident false positives."""
        with torch.no_grad():
            for box, cls, stride in zip(self.box, self.cls, self.strides, strict=True):
                box[-1].bias.fill_(1.0)
                cls[-1].bias.fill_(math.log(PRIOR_OBJECTS / self.nc / (BIAS_IMGSZ / stride) ** 2))

    def raw(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level [B, 4 * reg_max + nc, H_i, W_i]: box DFL logits (l, t, r, b) then class logits."""
        return [torch.cat((box(f), cls(f)), 1) for f, box, cls in zip(feats, self.box, self.cls, strict=True)]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """[B, 4 + nc, N]: box centre x, centre y, width, height (input pixels), then sigmoid class
        probabilities; N = sum of H_i * W_i, level 0 first, row-major within a level."""
        flat = torch.cat([r.flatten(2) for r in raw], 2)
        n_box = 4 * self.reg_max
        boxes = boxes_in_pixels(self.dfl(flat[:, :n_box]), raw, self.strides)
        return torch.cat((boxes, flat[:, n_box:].sigmoid()), 1)

    def forward(self, feats: list[torch.Tensor]):
        raw = self.raw(feats)
        return raw if self.training else self.decode(raw)
