"""Source of `yolov8_like`, a test-only module family whose detector has exactly the state_dict of an
Ultralytics YOLOv8 DetectionModel: the same key names (model.0.conv.weight, model.0.bn.*, ...,
model.22.cv2.<level>.*, model.22.cv3.<level>.*, model.22.dfl.conv.weight), shapes and order, the same
`f` / `i` attributes on its blocks, names as {index: name}, a `stride` tensor, and the eval output of
Ultralytics 8.4: (y [B, 4 + nc, N], {"boxes", "scores", "feats"}). It is written from the published
YOLOv8 design (the yolov8.yaml layer table and scales, and the shapes of the files Ultralytics writes),
not from Ultralytics' code, and it computes independently of optkit: its DFL is the fixed 1x1 conv
over the bins that Ultralytics stores, its anchors are built here.

Variants for the refusal tests: `block2="C3"` puts a YOLOv5-style C3 at model.2 (as YOLOv5u files
have), `cls_width` widens the class branches (a custom head), `strides` changes the head's strides,
`neck_shortcut` gives the neck's C2f blocks residual adds (same tensors, other computation).

Tests write it into tmp_path, so unpickling a file that uses it needs --code-dir (tests/foreign)."""

PACKAGE = "yolov8_like"

INIT = """
"""

NN = """
import math

import torch
from torch import nn

ACTS = {"silu": nn.SiLU, "relu": nn.ReLU}


def make_divisible(x, divisor=8):
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, act="silu"):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=0.001, momentum=0.03)
        self.act = ACTS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut, k=(3, 3), act="silu"):
        super().__init__()
        self.cv1 = Conv(c1, c2, k[0], 1, act)
        self.cv2 = Conv(c2, c2, k[1], 1, act)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False, act="silu"):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1, 1, act)
        self.cv2 = Conv((2 + n) * self.c, c2, 1, 1, act)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, act=act) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C3(nn.Module):
    # YOLOv5's block (what YOLOv5u files have where YOLOv8 has C2f)
    def __init__(self, c1, c2, n=1, shortcut=True, act="silu"):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1, 1, act)
        self.cv2 = Conv(c1, c_, 1, 1, act)
        self.cv3 = Conv(2 * c_, c2, 1, 1, act)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, k=(1, 3), act=act) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5, act="silu"):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1, act)
        self.cv2 = Conv(c_ * 4, c2, 1, 1, act)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    def __init__(self, d=1):
        super().__init__()
        self.d = d

    def forward(self, x):
        return torch.cat(x, self.d)


class DFL(nn.Module):
    # the expected bin index as a fixed 1x1 conv whose weights are 0..c1-1 (stored in the state_dict)
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    export = False

    def __init__(self, nc, ch, act="silu", cls_width=None, reg_max=16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.stride = torch.zeros(self.nl)
        c2 = max(16, ch[0] // 4, 4 * reg_max)
        c3 = cls_width or max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3, 1, act), Conv(c2, c2, 3, 1, act), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3, 1, act), Conv(c3, c3, 3, 1, act), nn.Conv2d(c3, nc, 1)) for x in ch
        )
        self.dfl = DFL(reg_max)

    def forward(self, x):
        if self.training:
            return [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        bs = x[0].shape[0]
        boxes = torch.cat([self.cv2[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], -1)
        scores = torch.cat([self.cv3[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], -1)
        y = torch.cat((self.decode(self.dfl(boxes), x), scores.sigmoid()), 1)
        return y if self.export else (y, {"boxes": boxes, "scores": scores, "feats": x})

    def decode(self, dist, feats):
        centres, steps = [], []
        for f, s in zip(feats, self.stride.tolist()):
            h, w = f.shape[-2:]
            ys = torch.arange(h, dtype=dist.dtype) + 0.5
            xs = torch.arange(w, dtype=dist.dtype) + 0.5
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            centres.append(torch.stack((gx, gy), 0).view(2, -1))
            steps.append(torch.full((1, h * w), s, dtype=dist.dtype))
        centres, steps = torch.cat(centres, 1).unsqueeze(0), torch.cat(steps, 1).unsqueeze(0)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = centres - lt, centres + rb
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * steps


# yolov8.yaml: (from, repeats, module, args)
TABLE = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C2f", [128, True]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C2f", [256, True]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 6, "C2f", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C2f", [1024, True]),
    (-1, 1, "SPPF", [1024, 5]),
    (-1, 1, "Upsample", []), ([-1, 6], 1, "Concat", []), (-1, 3, "C2f", [512]),
    (-1, 1, "Upsample", []), ([-1, 4], 1, "Concat", []), (-1, 3, "C2f", [256]),
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 12], 1, "Concat", []), (-1, 3, "C2f", [512]),
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 9], 1, "Concat", []), (-1, 3, "C2f", [1024]),
    ([15, 18, 21], 1, "Detect", []),
]


class DetectionModel(nn.Module):
    def __init__(self, nc=3, scale=(0.33, 0.25, 1024), names=None, act="silu", block2="C2f", cls_width=None,
                 strides=(8, 16, 32), neck_shortcut=False):
        super().__init__()
        depth, width, max_channels = scale
        layers, ch = [], []
        for i, (f, n, kind, args) in enumerate(TABLE):
            c1 = ch[f] if isinstance(f, int) and ch else 3
            n = max(round(n * depth), 1)
            if kind in ("Conv", "C2f", "SPPF"):
                c2 = make_divisible(min(args[0], max_channels) * width)
            if kind == "Conv":
                m = Conv(c1, c2, args[1], args[2], act)
            elif kind == "C2f":
                shortcut = args[1] if len(args) > 1 else neck_shortcut
                m = (C3 if i == 2 and block2 == "C3" else C2f)(c1, c2, n, shortcut, act)
            elif kind == "SPPF":
                m = SPPF(c1, c2, args[1], act)
            elif kind == "Upsample":
                m, c2 = nn.Upsample(None, 2, "nearest"), c1
            elif kind == "Concat":
                m, c2 = Concat(1), sum(ch[j] for j in f)
            else:
                m, c2 = Detect(nc, [ch[j] for j in f], act, cls_width), 0
            m.f, m.i, m.type = f, i, kind
            layers.append(m)
            ch.append(c2)
        self.model = nn.Sequential(*layers)
        self.save = sorted({j for f, _, _, _ in TABLE if not isinstance(f, int) for j in f if j != -1})
        self.model[-1].stride = torch.tensor([float(s) for s in strides])
        self.stride = self.model[-1].stride
        self.nc = nc
        self.names = names or {i: f"class{i}" for i in range(nc)}
        self.yaml = {"nc": nc, "scale": "custom", "depth_multiple": depth, "width_multiple": width}
        self.args = {"imgsz": 64, "task": "detect"}

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x
"""
