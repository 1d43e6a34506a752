"""YOLOv5-cls style classifiers: a CSP (C3) backbone with 5 stride-2 convs and a Classify head.

Layer table (channels before width scaling, repeats before depth scaling), as in YOLOv5's
`yolov5*-cls.yaml`; each row is one top-level block `model.<i>`:

    0 Conv 64, k6 s2 p2   (P1/2)      5 Conv 512, k3 s2  (P4/16)
    1 Conv 128, k3 s2     (P2/4)      6 C3 512 x9
    2 C3 128 x3                       7 Conv 1024, k3 s2 (P5/32)
    3 Conv 256, k3 s2     (P3/8)      8 C3 1024 x3
    4 C3 256 x6                       9 Classify (1x1 Conv to 1280, pool, dropout, Linear)
"""

from __future__ import annotations

from torch import nn

from optkit.models.activations import check_act
from optkit.models.blocks import C3, Classify, Conv, make_divisible
from optkit.models.options import check_dropout, check_positive
from optkit.models.parts import HeadedSequential
from optkit.models.registry import register_model

# (output channels, C3 repeats after the stride-2 conv); stage 0 is the k6 stem without a C3.
_STAGES = ((64, 0), (128, 3), (256, 6), (512, 9), (1024, 3))
_HEAD_CHANNELS = 1280  # Classify's 1x1 conv width, not scaled (as in YOLOv5)


class YoloCls(HeadedSequential):
    stride = 32  # pixels: five stride-2 convs

    def __init__(
        self,
        num_classes: int,
        width_multiple: float,
        depth_multiple: float,
        act: str = "silu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_act(act)
        width_multiple = check_positive("width_multiple", width_multiple)
        depth_multiple = check_positive("depth_multiple", depth_multiple)
        layers: list[nn.Module] = []
        c1 = 3
        for i, (c, n) in enumerate(_STAGES):
            c2 = make_divisible(c * width_multiple, 8)
            if i == 0:
                layers.append(Conv(c1, c2, 6, 2, 2, act=act))  # 6x6 stem: cheap 2x downsampling
            else:
                layers.append(Conv(c1, c2, 3, 2, act=act))
                layers.append(C3(c2, c2, n=max(round(n * depth_multiple), 1), act=act))
            c1 = c2
        layers.append(Classify(c1, num_classes, _HEAD_CHANNELS, check_dropout(dropout), act=act))
        self.model = nn.Sequential(*layers)


@register_model("yolo-cls-n", default_imgsz=224, description="YOLOv5n-cls style classifier (2.5M params)")
def yolo_cls_n(
    num_classes: int = 10,
    act: str = "silu",
    width_multiple: float = 0.25,
    depth_multiple: float = 0.33,
    dropout: float = 0.0,
) -> YoloCls:
    return YoloCls(num_classes, width_multiple, depth_multiple, act, dropout)


@register_model("yolo-cls-s", default_imgsz=224, description="YOLOv5s-cls style classifier (5.5M params)")
def yolo_cls_s(
    num_classes: int = 10,
    act: str = "silu",
    width_multiple: float = 0.50,
    depth_multiple: float = 0.33,
    dropout: float = 0.0,
) -> YoloCls:
    return YoloCls(num_classes, width_multiple, depth_multiple, act, dropout)
