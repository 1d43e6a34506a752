"""Anchor points and box <-> distance conversions of anchor-free YOLO detectors (the YOLOv8 design).

Each cell of a feature map at stride s is one anchor point at the cell's centre. A box is predicted as
its four distances (left, top, right, bottom) from that point, in units of the stride. The detector's
head decodes with these (optkit.models.yolo_det) and the loss encodes its targets with them
(optkit.tasks.detect_loss), so both read the same geometry.
"""

from __future__ import annotations

import torch

CELL_OFFSET = 0.5  # anchor points sit at cell centres: (x + 0.5, y + 0.5) cells


def make_anchors(shapes: list[tuple[int, int]], strides, dtype=torch.float32, device=None):
    """Anchor points of feature maps of `shapes` [(H, W), ...] at `strides` (pixels per cell).

    Returns (points [N, 2] (x, y) in cells of their own level, point_strides [N, 1] in pixels); level 0
    first, row-major within a level (the order of the head's decoded output).
    """
    points, point_strides = [], []
    for (h, w), stride in zip(shapes, strides, strict=True):
        ys = torch.arange(h, dtype=dtype, device=device) + CELL_OFFSET
        xs = torch.arange(w, dtype=dtype, device=device) + CELL_OFFSET
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).view(-1, 2))
        point_strides.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(point_strides)


def dist_to_xywh(distances, points, dim: int = -1):
    """(left, top, right, bottom) distances from `points` -> (centre x, centre y, width, height), in the
    units of the inputs. `dim` is the axis holding the 4 distances (and the 2 point coordinates)."""
    lt, rb = distances.chunk(2, dim)
    top_left, bottom_right = points - lt, points + rb
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim)


def dist_to_xyxy(distances, points, dim: int = -1):
    """(left, top, right, bottom) distances from `points` -> (x1, y1, x2, y2)."""
    lt, rb = distances.chunk(2, dim)
    return torch.cat((points - lt, points + rb), dim)


def xyxy_to_dist(points, boxes, max_distance: float):
    """(x1, y1, x2, y2) boxes -> their distances from `points`, clamped to [0, max_distance) so that a
    distribution over bins 0..max_distance can represent them (the DFL target)."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp_(0, max_distance - 0.01)
