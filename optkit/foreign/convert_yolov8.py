"""Ultralytics YOLOv8 detectors -> optkit `yolo-det-*` models, mapped by structure (issue 15, part 8).

optkit's yolo-det (optkit.models.yolo_det) is the published YOLOv8 design, so a YOLOv8 detection model's
state_dict holds the same tensors in the same order under almost the same names. Facts this mapping
relies on (from the published design and the state_dicts of files Ultralytics writes, not its code):

- blocks `model.0` .. `model.21` carry the keys optkit's carry (Conv `.conv` / `.bn`, C2f `.cv1` /
  `.cv2` / `.m.<j>.cv1|cv2`, SPPF `.cv1` / `.cv2`), BatchNorm eps 1e-3;
- the head `model.22` names its box branches `cv2.<level>` and its class branches `cv3.<level>` (optkit:
  `box.<level>`, `cls.<level>`); its DFL is a fixed 1x1 conv whose weights are the bin indices 0..15
  (`model.22.dfl.conv.weight`; optkit computes the same expectation without storing it);
- the scale is in the tensors: the width from the channels of `model.1` (128 before scaling), the
  channel cap from `model.7` (1024 before the cap), the depth from the bottlenecks of each C2f; the
  published scales are n, s (cap 1024), m (768), l and x (512).

Whatever does not map (another YOLO version's blocks, a custom head, other strides or wiring) is refused
naming the first layer that differs (`StructureError`). A mapped model is checked against the file's own
module on random images (`compare_outputs`) before it is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn

HEAD = 22  # index of the Detect block in the YOLOv8 layer table
RENAMES = ((f"model.{HEAD}.cv2.", f"model.{HEAD}.box."), (f"model.{HEAD}.cv3.", f"model.{HEAD}.cls."))
DFL_KEY = f"model.{HEAD}.dfl.conv.weight"  # the fixed bin indices: checked, not carried
STRIDES = (8, 16, 32)  # pixels per cell of the three head levels

# published scales: name -> (depth_multiple, width_multiple, max_channels)
SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}
# optkit's registered variants and the scale their defaults build (the others take options)
VARIANTS = {"yolo-det-n": "n", "yolo-det-s": "s"}
FALLBACK_VARIANT = "yolo-det-n"
DEFAULT_ACT = "silu"
OUTPUT_RTOL = 1e-4  # max |Δ| of the outputs allowed, as a fraction of the output scale


class StructureError(CheckpointError):
    """The file's model is not the YOLOv8 design; the message names the first layer that differs."""


@dataclass
class Conversion:
    """What was read from the foreign model and what optkit builds from it."""

    arch: str  # optkit registry name
    options: dict  # the registry options (those that differ from the variant's defaults)
    num_classes: int
    scale: str | None  # the published scale the file matches ("n" .. "x"), None for another one
    depth: float
    width: float
    max_channels: int
    act: str
    check: dict = field(default_factory=dict)  # compare_outputs' figures

    def as_dict(self) -> dict:
        return {
            "arch": self.arch,
            "options": dict(self.options),
            "num_classes": self.num_classes,
            "scale": self.scale,
            "depth_multiple": self.depth,
            "width_multiple": self.width,
            "max_channels": self.max_channels,
            "act": self.act,
            "check": dict(self.check),
        }


def convert_yolov8(module: nn.Module) -> tuple[nn.Module, Conversion]:
    """An optkit yolo-det model (eval mode) with the weights of `module`, a YOLOv8 DetectionModel in
    float32; raises StructureError naming the first layer that does not map."""
    import torch

    from optkit.models import create_model

    blocks = _blocks(module)
    state = module.state_dict()
    _check_strides(module, blocks)
    conversion = read_scale(state, act=_activation(blocks))
    build = {"num_classes": conversion.num_classes, **conversion.options}
    with torch.device("meta"):  # shapes and settings only: checked before any memory is taken
        layout = create_model(conversion.arch, **build)
    mapped = mapped_state(state, layout.state_dict(), blocks)
    _check_modules(blocks, layout)
    _check_routing(blocks, layout)
    model = create_model(conversion.arch, **build)  # its tensors: the file's, no larger
    model.load_state_dict(mapped, strict=True)
    return model.eval(), conversion


# --- the scale, from the tensors ---------------------------------------------------------------


def read_scale(state: dict, act: str = DEFAULT_ACT) -> Conversion:
    """Width, depth, channel cap and class count from the state_dict's shapes, snapped to a published
    scale when that one builds the same shapes. Missing keys fall back to the n scale: the shape
    comparison that follows then names the first layer that differs."""
    width = _out_channels(state, "model.1.conv.weight", 32) / 128  # model.1: 128 channels before scaling
    top = _out_channels(state, "model.7.conv.weight", 0)  # model.7: 1024 before the cap
    uncapped = _divisible(1024 * width)
    cap = 1024 if top in (0, uncapped) else max(1, round(top / width))
    repeats = {i: _repeats(state, i) for i in C2F_ROWS}
    inferred = repeats[4] / C2F_ROWS[4] or SCALES["n"][0]  # no bottlenecks found: the n scale's
    depth = next((d for d, _, _ in SCALES.values() if _repeats_at(d) == repeats), inferred)
    nc = _out_channels(state, f"model.{HEAD}.cv3.0.2.weight", 80)
    scale = next((name for name, s in SCALES.items() if _same_shapes(s, (depth, width, cap))), None)
    if scale is not None:
        depth, width, cap = SCALES[scale]
    arch = next((a for a, s in VARIANTS.items() if s == scale), FALLBACK_VARIANT)
    defaults = SCALES[VARIANTS[arch]]
    options = {
        key: value
        for key, value, default in (
            ("depth_multiple", depth, defaults[0]),
            ("width_multiple", width, defaults[1]),
            ("max_channels", cap, defaults[2]),
        )
        if value != default
    }
    if act != DEFAULT_ACT:
        options["act"] = act
    return Conversion(arch, options, nc, scale, depth, width, cap, act)


# C2f rows of the layer table and their repeats before depth scaling
C2F_ROWS = {2: 3, 4: 6, 6: 6, 8: 3, 12: 3, 15: 3, 18: 3, 21: 3}


def _repeats_at(depth: float) -> dict[int, int]:
    return {i: max(round(n * depth), 1) for i, n in C2F_ROWS.items()}


def _same_shapes(a: tuple, b: tuple) -> bool:
    """Two (depth, width, cap) scales build the same tensors (same repeats, same channels per row)."""
    from optkit.models.yolo_det import LAYERS

    if _repeats_at(a[0]) != _repeats_at(b[0]):
        return False
    bases = [args[0] for _, kind, args in LAYERS if kind in ("Conv", "C2f", "SPPF")]
    return all(_divisible(min(c, a[2]) * a[1]) == _divisible(min(c, b[2]) * b[1]) for c in bases)


def _divisible(x: float) -> int:
    from optkit.models.blocks import make_divisible

    return make_divisible(x, 8)


def _out_channels(state: dict, key: str, default: int) -> int:
    t = state.get(key)
    return int(t.shape[0]) if t is not None and t.ndim >= 1 else default


def _repeats(state: dict, row: int) -> int:
    """Bottlenecks in C2f block `row` (distinct `model.<row>.m.<j>.` prefixes)."""
    prefix = f"model.{row}.m."
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


# --- structure checks, each naming the first layer that differs -------------------------------------


def _blocks(module: nn.Module) -> list:
    """The top-level blocks (`module.model`, a Sequential of 23 for YOLOv8)."""
    blocks = getattr(module, "model", None)
    try:
        return list(blocks)
    except TypeError:
        raise StructureError(
            f"its model ({type(module).__name__}) has no block list 'model' (a YOLOv8 DetectionModel has "
            "23 blocks, model.0 .. model.22)"
        ) from None


def _layer(blocks: list, index: int) -> str:
    if index < 0:
        return "(top level)"
    kind = type(blocks[index]).__name__ if index < len(blocks) else "missing"
    return f"model.{index} ({kind})"


def _top(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else -1


def _foreign_name(key: str) -> str:
    """optkit's key in the file's naming (box/cls -> cv2/cv3), for messages."""
    for theirs, ours in RENAMES:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return key


def _shape(t) -> str:
    return "[" + ", ".join(str(int(s)) for s in t.shape) + "]"


def mapped_state(state: dict, expected: dict, blocks: list) -> dict:
    """The file's state_dict under optkit's names, checked key by key, in order, against `expected`
    (optkit's): the first key or shape that differs raises StructureError naming its layer."""
    import torch

    dfl = state.get(DFL_KEY)
    renamed = []
    for key, tensor in state.items():
        if key == DFL_KEY:
            continue
        for theirs, ours in RENAMES:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                break
        renamed.append((key, tensor))
    ours = list(expected.items())
    for i in range(max(len(renamed), len(ours))):
        have = renamed[i] if i < len(renamed) else None
        want = ours[i] if i < len(ours) else None
        if have is not None and want is not None and have[0] == want[0]:
            if have[1].shape == want[1].shape:
                continue
        raise _differs(blocks, have, want)
    if dfl is None or dfl.numel() != 16 or not torch.equal(dfl.flatten().float(), torch.arange(16.0)):
        found = "no DFL weights" if dfl is None else f"DFL weights {_shape(dfl)} other than the bins 0..15"
        raise StructureError(f"layer {_layer(blocks, HEAD)} differs: {found} ({DFL_KEY})")
    return {key: tensor.detach().float().clone() for key, tensor in renamed}


def _differs(blocks: list, have, want) -> StructureError:
    """The message for the first (key, tensor) pair that differs: the file's, optkit's (None: absent)."""
    index = min(_top(pair[0]) for pair in (have, want) if pair is not None)
    theirs = f"{_foreign_name(have[0])} {_shape(have[1])}" if have else "nothing more"
    where = f"{_foreign_name(want[0])} {_shape(want[1])}" if want else "nothing more"
    folded = have is not None and want is not None and have[0].endswith(".conv.bias")
    hint = (
        "; its BatchNorm is folded into the convolutions: convert the file from before fusing"
        if folded
        else ""
    )
    return StructureError(
        f"layer {_layer(blocks, index)} differs from YOLOv8's: the file has {theirs} where YOLOv8 has "
        f"{where}{hint}"
    )


def _activation(blocks: list) -> str:
    """optkit's name for the activation of the first Conv block (model.0); every Conv is compared with it
    later (_check_modules)."""
    from optkit.models.activations import ACTIVATIONS

    act = getattr(blocks[0], "act", None) if blocks else None
    name = _act_name(act)
    if act is not None and name is None:
        raise StructureError(
            f"layer {_layer(blocks, 0)} uses the activation {type(act).__name__}; optkit's yolo-det takes "
            f"{', '.join(ACTIVATIONS)}"
        )
    return name or DEFAULT_ACT


def _act_name(act) -> str | None:
    from torch import nn

    for name, cls in (("silu", nn.SiLU), ("relu6", nn.ReLU6), ("relu", nn.ReLU), ("hardswish", nn.Hardswish)):
        if type(act) is cls:
            return name
    return None


def _check_strides(module: nn.Module, blocks: list) -> None:
    """The head's levels are at strides 8, 16, 32 (YOLOv8's P3, P4, P5)."""
    stride = getattr(blocks[-1], "stride", None) if blocks else None
    if stride is None:
        stride = getattr(module, "stride", None)
    try:
        values = tuple(int(s) for s in stride) if stride is not None else STRIDES
    except (TypeError, ValueError):
        values = STRIDES  # a form this check cannot read: the output comparison still runs
    if values != STRIDES:
        raise StructureError(
            f"layer {_layer(blocks, len(blocks) - 1)} has strides {', '.join(map(str, values))}; "
            "YOLOv8's head has 8, 16, 32"
        )


def _signature(m) -> tuple | None:
    """What a leaf module does beyond its tensors' shapes (None: a module with nothing to compare)."""
    from torch import nn

    if isinstance(m, nn.Conv2d):
        return ("Conv2d", m.stride, m.padding, m.dilation, m.groups, m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return ("BatchNorm2d", m.eps)
    if isinstance(m, nn.MaxPool2d):
        return ("MaxPool2d", m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.Upsample):
        return ("Upsample", float(m.scale_factor or 0), m.mode)
    if isinstance(m, (nn.SiLU, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Identity)):
        return ("activation", _act_name(m) or type(m).__name__)
    return None


def _check_modules(blocks: list, model: nn.Module) -> None:
    """Every leaf of optkit's model (convolution settings, BatchNorm eps, pooling, upsampling,
    activations) and every residual switch (`add`) matches the file's module at the same path."""
    from torch import nn

    theirs = nn.ModuleDict({str(i): b for i, b in enumerate(blocks)})
    for name, ours in model.model.named_modules():
        if not name:
            continue
        path = _foreign_name(f"model.{name}.")[len("model.") : -1]  # box/cls -> cv2/cv3
        other = _submodule(theirs, path)
        want = _signature(ours)
        if want is not None and (other is None or _signature(other) != want):
            raise _module_differs(blocks, name, path, other, want)
        if isinstance(getattr(ours, "add", None), bool) and other is not None:
            flag = getattr(other, "add", None)
            if isinstance(flag, bool) and flag != ours.add:
                raise StructureError(
                    f"layer {_layer(blocks, int(name.split('.')[0]))} differs from YOLOv8's: "
                    f"model.{path} {'adds' if flag else 'does not add'} its input (YOLOv8: "
                    f"{'adds' if ours.add else 'does not'})"
                )


def _submodule(root, path: str):
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _module_differs(blocks: list, name: str, path: str, other, want: tuple) -> StructureError:
    got = "nothing" if other is None else (_signature(other) or (type(other).__name__,))
    return StructureError(
        f"layer {_layer(blocks, int(name.split('.')[0]))} differs from YOLOv8's: model.{path} is "
        f"{_describe(got)} where YOLOv8 has {_describe(want)}"
    )


def _describe(signature) -> str:
    if isinstance(signature, str):
        return signature
    kind, *facts = signature
    labels = {
        "Conv2d": ("stride", "padding", "dilation", "groups", "bias"),
        "BatchNorm2d": ("eps",),
        "MaxPool2d": ("kernel", "stride", "padding"),
        "Upsample": ("scale", "mode"),
        "activation": ("",),
    }.get(kind, ())
    if kind == "activation":
        return f"activation {facts[0]}"
    return f"{kind} (" + ", ".join(f"{k} {v}" for k, v in zip(labels, facts, strict=False)) + ")"


def _check_routing(blocks: list, model: nn.Module) -> None:
    """Where the file's blocks say which outputs they read (`f`, as Ultralytics' do), it is YOLOv8's
    table (optkit's `sources`)."""
    for i, (block, source) in enumerate(zip(blocks, model.sources, strict=False)):
        read = getattr(block, "f", None)
        if read is None:
            continue
        read = tuple(read) if isinstance(read, (list, tuple)) else read
        if read != source:
            raise StructureError(
                f"layer {_layer(blocks, i)} differs from YOLOv8's: it reads {_route(read)} where YOLOv8's "
                f"reads {_route(source)}"
            )


def _route(source) -> str:
    if source == -1:
        return "the previous block"
    items = source if isinstance(source, tuple) else (source,)
    return "blocks " + ", ".join("previous" if j == -1 else str(j) for j in items)


# --- the proof: the same outputs ---------------------------------------------------------------------


def compare_outputs(
    foreign: nn.Module, converted: nn.Module, num_classes: int, imgsz: int, images: int = 2, seed: int = 0
) -> dict:
    """Both models on the same random images (uniform [0, 1], `imgsz` pixels square), their decoded
    [B, 4 + nc, N] outputs compared: max |Δ| overall and of the class scores alone, the output scale
    (max |output|, the boxes' pixels dominate it) and max |Δ| / scale."""
    import torch

    from optkit.measure.detect_eval import detector_output

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, imgsz, imgsz, generator=g)
    with torch.no_grad():
        theirs = detector_output(foreign.float().eval()(x.clone()), num_classes).float()
        ours = converted.eval()(x.clone()).float()
    if theirs.shape != ours.shape:
        raise StructureError(
            f"its outputs have the shape {list(theirs.shape)}; the mapped model's have {list(ours.shape)}"
        )
    delta = (theirs - ours).abs()
    scale = float(theirs.abs().max())
    max_abs = float(delta.max())
    return {
        "images": images,
        "imgsz": imgsz,
        "max_abs": max_abs,
        "max_abs_scores": float(delta[:, 4:].max()) if num_classes else 0.0,
        "scale": scale,
        "max_rel": max_abs / scale if scale > 0 else max_abs,
    }


def check_size(imgsz: int, cap: int = 320) -> int:
    """The image side the output check runs at: the file's size, at most `cap` pixels (the weights are
    the same at every size; a smaller image keeps the check quick), a multiple of the stride 32."""
    return max(32, min(imgsz, cap) // 32 * 32)
