"""Source of `yolo_like`, a small model family that imitates the YOLOv5 / Ultralytics layout (Conv with
.conv/.bn/.act and forward_fuse, C3, Concat, Upsample, a Detect head with anchors, grids and a
(predictions, feature maps) output, a softmax Classify head, pickled transforms), and in `v8` an
anchor-free detector whose head returns what Ultralytics 8.4's does in eval mode: `(y, {"boxes", "scores",
"feats"})`, y [B, 4 + nc, N]. Tests write it into tmp_path, so unpickling a checkpoint that uses it needs
--code-dir, as a YOLOv5 checkout does."""

INIT = """
import os

_marker = os.environ.get("YOLO_LIKE_IMPORT_MARKER")
if _marker:  # lets a test prove that importing this package (= running its code) did or did not happen
    open(_marker, "w").close()
"""

COMMON = '''
import torch
from torch import nn


def autopad(k, p=None):
    return k // 2 if p is None else p


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


def fuse_conv_and_bn(conv, bn):
    """YOLOv5's own folding, used by Model.fuse() (what the user's tools call when they load a file)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=True).requires_grad_(False).to(conv.weight.device)
    w_conv = conv.weight.clone().view(conv.out_channels, -1)
    w_bn = torch.diag(bn.weight.div(torch.sqrt(bn.eps + bn.running_var)))
    fused.weight.copy_(torch.mm(w_bn, w_conv).view(fused.weight.shape))
    b_conv = torch.zeros(conv.weight.size(0), device=conv.weight.device) if conv.bias is None else conv.bias
    b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
    fused.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
    return fused
'''

YOLO = """
import torch
from torch import nn

from yolo_like.common import C3, Concat, Conv, fuse_conv_and_bn


class Detect(nn.Module):
    stride = None
    export = False

    def __init__(self, nc=3, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)

    def _make_grid(self, nx, ny, i):
        d, t = self.anchors[i].device, self.anchors[i].dtype
        y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2))
        anchor_grid = anchor_grid.expand(1, self.na, ny, nx, 2)
        return grid, anchor_grid


class Classify(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.conv = Conv(c1, 32, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=0.0)
        self.linear = nn.Linear(32, c2)

    def forward(self, x):
        x = self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
        return x if self.training else x.softmax(1)  # Ultralytics: probabilities in eval mode


class BaseModel(nn.Module):
    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def fuse(self):
        for m in self.model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return self

    def _link(self, layers):
        for i, (f, m) in enumerate(layers):
            m.f, m.i = f, i
        self.save = sorted({j for f, _ in layers for j in ([f] if isinstance(f, int) else f) if j != -1})
        self.model = nn.Sequential(*(m for _, m in layers))


class DetectionModel(BaseModel):
    def __init__(self, nc=3, w=8, names=None):
        super().__init__()
        anchors = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
        detect = Detect(nc, tuple(tuple(a / s for a in row) for row, s in zip(anchors, (8, 16, 32))),
                        (4 * w, 8 * w, 8 * w))
        self._link([
            (-1, Conv(3, w, 3, 2)), (-1, Conv(w, 2 * w, 3, 2)), (-1, C3(2 * w, 2 * w)),
            (-1, Conv(2 * w, 4 * w, 3, 2)), (-1, C3(4 * w, 4 * w)),  # 4: P3/8
            (-1, Conv(4 * w, 8 * w, 3, 2)), (-1, C3(8 * w, 8 * w)),  # 6: P4/16
            (-1, Conv(8 * w, 8 * w, 3, 2)), (-1, C3(8 * w, 8 * w)),  # 8: P5/32
            (-1, nn.Upsample(None, 2, "nearest")), ([-1, 6], Concat(1)), (-1, C3(16 * w, 8 * w)),  # 11: P4
            ([4, 11, 8], detect),
        ])
        detect.stride = torch.tensor([8.0, 16.0, 32.0])
        self.stride = detect.stride
        self.nc = nc
        self.names = names or {i: f"class{i}" for i in range(nc)}
        self.yaml = {"nc": nc, "width": w}
        self.args = {"imgsz": 64}


class ClassificationModel(BaseModel):
    def __init__(self, nc=3, w=8, names=None, transforms=None):
        super().__init__()
        self._link([
            (-1, Conv(3, w, 3, 2)), (-1, Conv(w, 2 * w, 3, 2)), (-1, C3(2 * w, 2 * w)),
            (-1, Conv(2 * w, 4 * w, 3, 2)), (-1, Classify(4 * w, nc)),
        ])
        self.stride = torch.tensor([32.0])
        self.nc = nc
        self.names = names or {i: f"class{i}" for i in range(nc)}
        self.transforms = transforms
"""

AUGMENT = """
class Compose:
    def __init__(self, transforms):
        self.transforms = transforms


class CenterCrop:
    def __init__(self, size):
        self.size = size


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std
"""

V8 = """
import torch
from torch import nn

from yolo_like.common import C3, Concat, Conv
from yolo_like.yolo import BaseModel


def cell_centres(maps, strides):
    # every cell's centre in input pixels, level by level, row-major: [N, 2] (x, y), and its stride [N, 1]
    points, steps = [], []
    for fmap, s in zip(maps, strides):
        h, w = fmap.shape[-2:]
        ys = (torch.arange(h, dtype=fmap.dtype, device=fmap.device) + 0.5) * s
        xs = (torch.arange(w, dtype=fmap.dtype, device=fmap.device) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        steps.append(torch.full((h * w, 1), float(s), dtype=fmap.dtype, device=fmap.device))
    return torch.cat(points), torch.cat(steps)


class Detect(nn.Module):
    # an anchor-free head: per level a box branch (4 sides x reg_max bins) and a class branch (nc logits)
    export = False

    def __init__(self, nc=3, ch=(), reg_max=16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.no = nc + 4 * reg_max
        self.stride = torch.zeros(self.nl)
        self.box = nn.ModuleList(nn.Sequential(Conv(c, 16, 3), nn.Conv2d(16, 4 * reg_max, 1)) for c in ch)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, 16, 3), nn.Conv2d(16, nc, 1)) for c in ch)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def forward(self, x):
        feats = [torch.cat((b(f), c(f)), 1) for f, b, c in zip(x, self.box, self.cls)]
        if self.training:
            return feats
        bs = feats[0].shape[0]
        flat = torch.cat([f.view(bs, self.no, -1) for f in feats], 2)  # [B, no, N]
        boxes, scores = flat.split((4 * self.reg_max, self.nc), 1)
        y = torch.cat((self.decode(boxes, feats), scores.sigmoid()), 1)  # [B, 4 + nc, N]
        return y if self.export else (y, {"boxes": boxes, "scores": scores, "feats": feats})

    def decode(self, boxes, feats):
        # each side's distance: the expectation of its softmax over reg_max bins, in cells
        bs, _, n = boxes.shape
        dist = (boxes.view(bs, 4, self.reg_max, n).softmax(2) * self.bins.view(1, 1, -1, 1)).sum(2)
        centres, steps = cell_centres(feats, [int(s) for s in self.stride])
        centres, steps = centres.T.unsqueeze(0), steps.T.unsqueeze(0)  # [1, 2, N], [1, 1, N]
        lt, rb = dist[:, :2] * steps, dist[:, 2:] * steps  # cells to pixels
        x1y1, x2y2 = centres - lt, centres + rb
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)  # centre x, y, width, height


class DetectionModel(BaseModel):
    def __init__(self, nc=3, w=8, names=None):
        super().__init__()
        detect = Detect(nc, (4 * w, 8 * w, 8 * w))
        self._link([
            (-1, Conv(3, w, 3, 2)), (-1, Conv(w, 2 * w, 3, 2)), (-1, C3(2 * w, 2 * w)),
            (-1, Conv(2 * w, 4 * w, 3, 2)), (-1, C3(4 * w, 4 * w)),  # 4: P3/8
            (-1, Conv(4 * w, 8 * w, 3, 2)), (-1, C3(8 * w, 8 * w)),  # 6: P4/16
            (-1, Conv(8 * w, 8 * w, 3, 2)), (-1, C3(8 * w, 8 * w)),  # 8: P5/32
            (-1, nn.Upsample(None, 2, "nearest")), ([-1, 6], Concat(1)), (-1, C3(16 * w, 8 * w)),  # 11: P4
            ([4, 11, 8], detect),
        ])
        detect.stride = torch.tensor([8.0, 16.0, 32.0])
        self.stride = detect.stride
        self.nc = nc
        self.names = names or {i: f"class{i}" for i in range(nc)}
        self.yaml = {"nc": nc, "width": w, "head": "anchor-free"}
        self.args = {"imgsz": 64, "task": "detect"}
"""
