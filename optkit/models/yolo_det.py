"""Anchor-free YOLO detectors (the published YOLOv8 design): a C2f backbone with SPPF, a PAN neck over
strides 8 / 16 / 32 and a decoupled DFL head (optkit.models.detect_blocks).

Layer table (channels before width scaling, repeats before depth scaling), as in the published
`yolov8.yaml`; each row is one top-level block `model.<i>`, `from` the blocks whose outputs it reads
(-1: the previous block):

     i  from        block                          i  from       block
     0  -1          Conv 64, k3 s2    (P1/2)      11  [-1, 6]    Concat
     1  -1          Conv 128, k3 s2   (P2/4)      12  -1         C2f 512 x3
     2  -1          C2f 128 x3, shortcut          13  -1         Upsample x2
     3  -1          Conv 256, k3 s2   (P3/8)      14  [-1, 4]    Concat
     4  -1          C2f 256 x6, shortcut          15  -1         C2f 256 x3       (P3 out)
     5  -1          Conv 512, k3 s2   (P4/16)     16  -1         Conv 256, k3 s2
     6  -1          C2f 512 x6, shortcut          17  [-1, 12]   Concat
     7  -1          Conv 1024, k3 s2  (P5/32)     18  -1         C2f 512 x3       (P4 out)
     8  -1          C2f 1024 x3, shortcut         19  -1         Conv 512, k3 s2
     9  -1          SPPF 1024, k5                 20  [-1, 9]    Concat
    10  -1          Upsample x2                   21  -1         C2f 1024 x3      (P5 out)
                                                  22  [15,18,21] Detect

Neck C2f blocks have no residual shortcut. Channels: make_divisible(min(c, max_channels) * width, 8);
repeats: max(round(n * depth), 1).
"""

from __future__ import annotations

from torch import nn

from optkit.models.activations import check_act
from optkit.models.blocks import SPPF, Conv, make_divisible
from optkit.models.detect_blocks import C2f, Concat, Detect
from optkit.models.options import check_positive
from optkit.models.parts import HeadedSequential
from optkit.models.registry import register_model

MAX_CHANNELS = 1024  # channel cap before width scaling (the published n and s scales)

# (from, block, args): Conv (c, k, s); C2f (c, n, shortcut); SPPF (c, k); Upsample, Concat, Detect ().
LAYERS = (
    (-1, "Conv", (64, 3, 2)),
    (-1, "Conv", (128, 3, 2)),
    (-1, "C2f", (128, 3, True)),
    (-1, "Conv", (256, 3, 2)),
    (-1, "C2f", (256, 6, True)),
    (-1, "Conv", (512, 3, 2)),
    (-1, "C2f", (512, 6, True)),
    (-1, "Conv", (1024, 3, 2)),
    (-1, "C2f", (1024, 3, True)),
    (-1, "SPPF", (1024, 5)),
    (-1, "Upsample", ()),
    ((-1, 6), "Concat", ()),
    (-1, "C2f", (512, 3, False)),
    (-1, "Upsample", ()),
    ((-1, 4), "Concat", ()),
    (-1, "C2f", (256, 3, False)),
    (-1, "Conv", (256, 3, 2)),
    ((-1, 12), "Concat", ()),
    (-1, "C2f", (512, 3, False)),
    (-1, "Conv", (512, 3, 2)),
    ((-1, 9), "Concat", ()),
    (-1, "C2f", (1024, 3, False)),
    ((15, 18, 21), "Detect", ()),
)


class YoloDet(HeadedSequential):
    """`model` runs the layer table; `sources[i]` says what block i reads: -1 (the previous block's
    output), an index, or a tuple of them (a list of maps). Only outputs read later are kept."""

    stride = 32  # pixels: the coarsest head level

    def __init__(
        self,
        num_classes: int,
        width_multiple: float,
        depth_multiple: float,
        act: str = "silu",
        max_channels: int = MAX_CHANNELS,
        head_widths: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_act(act)
        width = check_positive("width_multiple", width_multiple)
        depth = check_positive("depth_multiple", depth_multiple)
        blocks: list[nn.Module] = []
        channels: list[int] = []  # output channels of each block
        for source, kind, args in LAYERS:
            inputs = [
                channels[j] if j != -1 else (channels[-1] if channels else 3) for j in _as_tuple(source)
            ]
            if kind == "Detect":
                box_width, cls_width = head_widths or (None, None)
                block, c2 = Detect(num_classes, tuple(inputs), act, box_width, cls_width), 0
            else:
                block, c2 = _block(kind, args, inputs, width, depth, max_channels, act)
            blocks.append(block)
            channels.append(c2)
        self.model = nn.Sequential(*blocks)
        self.sources = tuple(source for source, _, _ in LAYERS)
        self.kept = frozenset(j for s in self.sources for j in _as_tuple(s) if j != -1)

    def features(self, x):
        """The maps the head reads (P3, P4, P5), in its order."""
        outputs: dict[int, object] = {}
        head = len(self.model) - 1
        for i in range(head):
            block, source = self.model[i], self.sources[i]
            if isinstance(source, tuple):
                x = block([x if j == -1 else outputs[j] for j in source])
            else:
                x = block(x if source == -1 else outputs[source])
            if i in self.kept:
                outputs[i] = x
        return [outputs[j] for j in self.sources[head]]

    def forward(self, x):
        """Training mode: the head's raw maps; eval mode: decoded [B, 4 + nc, N] (Detect.forward)."""
        return self.model[-1](self.features(x))

    def forward_raw(self, x):
        """The head's raw maps in any mode (eval: BN running statistics used, not updated), so one pass
        gives both the validation loss and the predictions (decode them with `model.model[-1].decode`)."""
        return self.model[-1].raw(self.features(x))


def _as_tuple(source: int | tuple[int, ...]) -> tuple[int, ...]:
    return source if isinstance(source, tuple) else (source,)


def _block(
    kind: str, args: tuple, inputs: list[int], width: float, depth: float, max_channels: int, act: str
):
    """(module, output channels) for one row of the table."""
    c1 = inputs[0]
    if kind == "Concat":
        return Concat(1), sum(inputs)
    if kind == "Upsample":
        return nn.Upsample(scale_factor=2, mode="nearest"), c1
    c2 = make_divisible(min(args[0], max_channels) * width, 8)
    if kind == "Conv":
        return Conv(c1, c2, args[1], args[2], act=act), c2
    if kind == "C2f":
        n = max(round(args[1] * depth), 1)
        return C2f(c1, c2, n, shortcut=args[2], act=act), c2
    if kind == "SPPF":
        return SPPF(c1, c2, args[1], act=act), c2
    raise AssertionError(f"no block kind {kind!r} in the layer table")


@register_model(
    "yolo-det-n",
    default_imgsz=640,
    description="YOLOv8n-design anchor-free detector (3.2M params, 8.7 GFLOPs at 640 px, 80 classes)",
    task="detect",
)
def yolo_det_n(
    num_classes: int = 10,
    act: str = "silu",
    width_multiple: float = 0.25,
    depth_multiple: float = 0.33,
    max_channels: int = MAX_CHANNELS,  # the published m / l / x scales cap at 768 / 512 (optkit convert)
) -> YoloDet:
    return YoloDet(num_classes, width_multiple, depth_multiple, act, max_channels)


@register_model(
    "yolo-det-s",
    default_imgsz=640,
    description="YOLOv8s-design anchor-free detector (11.2M params, 28.6 GFLOPs at 640 px, 80 classes)",
    task="detect",
)
def yolo_det_s(
    num_classes: int = 10,
    act: str = "silu",
    width_multiple: float = 0.50,
    depth_multiple: float = 0.33,
    max_channels: int = MAX_CHANNELS,  # the published m / l / x scales cap at 768 / 512 (optkit convert)
) -> YoloDet:
    return YoloDet(num_classes, width_multiple, depth_multiple, act, max_channels)


@register_model(
    "test-det",
    default_imgsz=64,
    description="tiny C2f / SPPF / PAN / Detect detector for tests",
    is_test=True,
    task="detect",
)
def test_det(num_classes: int = 10, act: str = "silu") -> YoloDet:
    # < 50k parameters: 1/16 of the width with channels capped at 16 (8..16 channels), one bottleneck per
    # C2f, head branches 16 (box) and 8 (class) channels wide
    return YoloDet(num_classes, 1 / 16, 0.17, act, max_channels=256, head_widths=(16, 8))
