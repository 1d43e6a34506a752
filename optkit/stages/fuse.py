"""fuse: fold BatchNorm into the conv / linear layer that feeds it (README).

In eval mode BatchNorm is a per-channel affine map, so after a layer with weight w and bias b it folds
into that layer (b = 0 when the layer had none; arithmetic in float64, cast back to the weight's dtype):

    s  = g / sqrt(var + eps)        per output channel
    w' = w * s                      along the output-channel axis
    b' = (b - mean) * s + beta

Pairs: Conv{1,2,3}d and ConvTranspose{1,2,3}d -> BatchNorm{1,2,3}d, Linear -> BatchNorm1d. The layer
gains a bias Parameter and the BN module is replaced in its parent by `nn.Identity()`, so every module
keeps its class and forward code (`Conv.forward` still computes act(bn(conv(x))), bn being the
identity). The state_dict changes only by gaining `<layer>.bias` and losing the BN entries, which is
what `replay` rebuilds before a checkpoint's fused weights are loaded strictly.

How pairs are found:
- fx (the normal path): the model is traced with torch.fx; a BN call whose input is the call of a
  conv/linear module, and whose input has no other user, is a pair. The graph proves that nothing else
  reads the layer's un-normalised output.
- fallback, for modules whose forward cannot be traced (Python control flow on tensor values): each
  child is traced on its own, so a YOLO `Conv` block is still checked to compute act(bn(conv(x))) from
  its own graph; and in an untraceable plain `nn.Sequential` a conv/linear child directly followed by a
  BN child is a pair (a Sequential passes each child's output to the next child only).
  `FuseReport.untraced` names the modules that could not be traced, `FuseReport.fallback` the pairs
  found this way and by which rule.
Every BN that is not folded is reported with the reason (`FuseReport.bn_left`).

Only layers that run torch's own forward are folded into (a subclass that overrides `forward`, e.g.
weight standardization, is reported instead), and nothing with hooks, parametrizations, weights
shared with another module, or a module registered under several names.

Known limit: a Linear -> BatchNorm1d pair assumes 2-D (N, C) activations; on a 3-D (N, L, C) Linear
output BatchNorm1d normalizes dim 1 instead. `fuse`'s output check catches such a model.

torch is imported inside the functions (docs/architecture.md, Heavy imports).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError, OptkitError
from optkit.limits import ATOL, Bounds
from optkit.transforms import register_transform

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

_ROOT = "<model>"  # how reports name the model itself (the root module)
KIND = "fuse"  # the checkpoint transform this stage owns (optkit.transforms)
VERSION = 1  # its entry layout: {"kind", "version", "fused": FuseReport.fused}
IMAGES = Bounds(1)  # the check's image side (pixels) and batch: any positive size runs


class FuseError(OptkitError):
    """The fused model's output differs from the original's by more than the tolerance."""


@dataclass
class FuseConfig:
    check: bool = True  # compare outputs before/after on random inputs
    atol: float = 1e-4  # max |Δ| / max |reference output| must be <= atol
    imgsz: int = 64  # pixels, square side of the check's random images (the checkpoint's imgsz)
    batch: int = 2  # images per check
    seed: int = 0  # seeds the check's random inputs
    input_shape: tuple[int, ...] | None = None  # full check input shape; None: (batch, 3, imgsz, imgsz)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The output check's settings (field names; the fuse flow names its --atol)."""
        if not self.check:
            return
        ATOL.check("atol", self.atol)
        if self.input_shape is None:
            IMAGES.check("imgsz", self.imgsz)
            IMAGES.check("batch", self.batch)


@dataclass
class FuseReport:
    fused: list[str]  # "<layer> + <bn>", e.g. "model.0.conv + model.0.bn", in graph order
    bn_left: dict[str, str]  # BN modules not folded -> why
    max_abs: float | None  # max |fused - original| over the check's outputs; None when not checked
    max_rel: float | None  # max_abs / max |original output|
    untraced: dict[str, str] = field(default_factory=dict)  # module -> why torch.fx could not trace it
    fallback: dict[str, str] = field(default_factory=dict)  # pair -> rule, for pairs found without fx

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Plan:
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (layer name, BN name)
    bn_left: dict[str, str] = field(default_factory=dict)
    untraced: dict[str, str] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    # Facts about the whole model that make a pair unsafe to fold in place.
    aliased: set[int] = field(default_factory=set)  # ids of modules registered under several names
    shared: set[int] = field(default_factory=set)  # ids of parameters used by several modules

    def decided(self, bn_name: str) -> bool:
        return bn_name in self.bn_left or any(bn == bn_name for _, bn in self.pairs)


def fuse(model: nn.Module, config: FuseConfig = FuseConfig()) -> tuple[nn.Module, FuseReport]:
    """A fused copy of `model` in eval mode, and what was done. The input model is not modified.

    With `config.check`, the copy's output before and after folding is compared on seeded random inputs
    and FuseError is raised when max |Δ| / max |output| exceeds `config.atol`.
    """
    import torch

    config.validate()  # fields may have changed since it was made
    work = copy.deepcopy(model).eval()
    x = _check_input(work, config) if config.check else None
    with torch.no_grad():
        reference = work(x) if config.check else None
        plan = _plan(work)
        _apply(work, plan.pairs)
        max_abs = max_rel = None
        if config.check:
            max_abs, scale = _difference(reference, work(x))
            max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
            if not max_rel <= config.atol:  # `not <=`: NaN fails too
                raise FuseError(
                    f"the fused model differs from the original: max |Δ| {max_abs:.3g} is {max_rel:.3g} "
                    f"of the output scale {scale:.3g}, above atol={config.atol:g}"
                )
    report = FuseReport(
        fused=[f"{layer} + {bn}" for layer, bn in plan.pairs],
        bn_left=plan.bn_left,
        max_abs=max_abs,
        max_rel=max_rel,
        untraced=plan.untraced,
        fallback=plan.fallback,
    )
    return work, report


def fuse_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold in place every BN that can be folded; return the (layer name, BN name) pairs.

    The folded model computes what `model` computed in eval mode (running statistics, not batch ones).
    """
    import torch

    plan = _plan(model)
    with torch.no_grad():
        _apply(model, plan.pairs)
    return plan.pairs


def fuse_transform(fused: list[str]) -> dict | None:
    """The checkpoint's record of a fuse: the folded pairs (`FuseReport.fused`); None when nothing was
    folded (the structure did not change, so there is nothing to replay)."""
    return {"kind": KIND, "version": VERSION, "fused": list(fused)} if fused else None


def replay(model: nn.Module, entry: dict) -> nn.Module:
    """Checkpoint rebuild: make a fresh architecture's structure match a fused one (weights come after).

    When the transform entry records the pairs (`"fused": FuseReport.fused`), they must be the pairs
    found here: a mismatch means this optkit fuses differently from the one that wrote the checkpoint.
    """
    pairs = fuse_(model)
    recorded = entry.get("fused")
    if recorded is not None:
        found = [f"{layer} + {bn}" for layer, bn in pairs]
        if list(recorded) != found:
            missing = sorted(set(recorded) - set(found)) or ["-"]
            extra = sorted(set(found) - set(recorded)) or ["-"]
            raise CheckpointError(
                f"the checkpoint's fuse transform does not replay on this architecture: it fused "
                f"{len(recorded)} pairs, this optkit finds {len(found)} (missing: {missing[0]}; "
                f"extra: {extra[0]})"
            )
    return model


register_transform(KIND, VERSION, replay)


# --- what can be folded ---------------------------------------------------------------------------


def _layer_classes() -> tuple[type, ...]:
    from optkit.models.layers import weight_layer_types

    return weight_layer_types()


def _bn_classes() -> tuple[type, ...]:
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _bn_for(layer_cls: type) -> type:
    """The BN class that normalises `layer_cls`'s output channels (dim 1 of its output)."""
    from torch import nn

    if layer_cls in (nn.Linear, nn.Conv1d, nn.ConvTranspose1d):
        return nn.BatchNorm1d
    if layer_cls in (nn.Conv2d, nn.ConvTranspose2d):
        return nn.BatchNorm2d
    return nn.BatchNorm3d


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, _bn_classes())


def _is_layer(m: nn.Module) -> bool:
    return isinstance(m, _layer_classes())


def _own_forward(m: nn.Module, base: type) -> bool:
    """True when `m` runs `base`'s forward code (a subclass that only adds attributes is fine)."""
    return type(m).forward is base.forward and getattr(type(m), "_conv_forward", None) is getattr(
        base, "_conv_forward", None
    )


def _module_problem(m: nn.Module, plan: _Plan) -> str | None:
    from torch.nn.utils import parametrize

    name = type(m).__name__
    if m._forward_pre_hooks or m._forward_hooks:
        return f"{name} has forward hooks (pruning or weight-norm reparametrization? make it permanent)"
    if parametrize.is_parametrized(m):
        return f"{name} has parametrized tensors"
    if id(m) in plan.aliased:
        return f"{name} is registered under several names"
    if any(id(p) in plan.shared for p in m.parameters(recurse=False)):
        return f"{name} shares a parameter with another module"
    return None


def _pair_problem(layer: nn.Module, bn: nn.Module, plan: _Plan) -> str | None:
    """Why `bn` cannot fold into `layer` (which feeds it alone), or None."""
    from torch import nn

    layer_cls = next(c for c in _layer_classes() if isinstance(layer, c))
    if not _own_forward(layer, layer_cls):
        return f"{type(layer).__name__} overrides {layer_cls.__name__}.forward"
    bn_cls = nn.SyncBatchNorm if isinstance(bn, nn.SyncBatchNorm) else _bn_for(layer_cls)
    if not isinstance(bn, bn_cls) or not _own_forward(bn, bn_cls):
        return f"{type(bn).__name__} does not fit after {layer_cls.__name__} (expected {bn_cls.__name__})"
    if bn.running_mean is None or bn.running_var is None:
        return "uses batch statistics (track_running_stats=False)"
    channels = layer.out_features if layer_cls is nn.Linear else layer.out_channels
    if channels != bn.num_features:
        return f"{channels} output channels feed a BN of {bn.num_features} features"
    return _module_problem(layer, plan) or _module_problem(bn, plan)


# --- finding pairs --------------------------------------------------------------------------------


def _plan(model: nn.Module) -> _Plan:
    bns = [name for name, m in model.named_modules() if _is_bn(m)]
    plan = _Plan()
    if not bns:
        return plan
    seen = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    plan.aliased = {i for i, n in seen.items() if n > 1}
    uses = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    plan.shared = {i for i, n in uses.items() if n > 1}
    _visit(model, "", plan)
    for name in bns:
        if not plan.decided(name):
            plan.bn_left[name] = "not called by the model's forward"
    return plan


def _tracer() -> fx.Tracer:
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        # Conv/linear/BN instances are leaves even when subclassed outside torch.nn, so the graph shows
        # them as module calls; whether a subclass can be folded is decided by `_pair_problem`.
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return _is_layer(m) or _is_bn(m) or super().is_leaf_module(m, qualname)

    return _Tracer()


def _visit(module: nn.Module, prefix: str, plan: _Plan) -> None:
    """Find pairs in `module` (named `prefix`) from its fx graph, or from its children if untraceable."""
    from torch import nn

    try:
        graph = _tracer().trace(module)
    except Exception as e:  # fx raises TraceError, TypeError, ... on control flow it cannot follow
        here = prefix.rstrip(".") or _ROOT
        plan.untraced[here] = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:200]
        children = list(module.named_children())
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            _pair_neighbours(children, prefix, plan)
        for name, child in children:
            if _is_bn(child):
                if not plan.decided(prefix + name):
                    plan.bn_left[prefix + name] = f"inside {here}, whose forward could not be traced"
            elif any(_is_bn(m) for m in child.modules()):
                _visit(child, f"{prefix}{name}.", plan)
        return
    _scan(graph, module, prefix, plan)


def _scan(graph: fx.Graph, module: nn.Module, prefix: str, plan: _Plan) -> None:
    """Pairs in one traced graph; `prefix` turns the graph's module names into the model's."""
    import torch.fx

    modules = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    rule = f"fx graph of {prefix.rstrip('.')}" if prefix else None  # None: the whole model's graph
    for node in graph.nodes:
        if node.op != "call_module" or not _is_bn(modules[node.target]):
            continue
        src = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        is_layer_call = (
            isinstance(src, torch.fx.Node) and src.op == "call_module" and _is_layer(modules[src.target])
        )
        if calls[node.target] > 1:
            why = "BN module is called more than once"
        elif not is_layer_call:
            why = f"input is not a conv output ({_describe(src, modules)})"
        elif len(src.users) > 1:
            why = "conv output also used elsewhere"
        elif calls[src.target] > 1:
            why = "conv module is called more than once"
        else:
            why = _pair_problem(modules[src.target], modules[node.target], plan)
        layer = prefix + src.target if is_layer_call else ""
        _decide(plan, layer, prefix + node.target, why, rule)


def _pair_neighbours(children: list[tuple[str, nn.Module]], prefix: str, plan: _Plan) -> None:
    """Fallback for an untraceable nn.Sequential: a layer child directly followed by a BN child."""
    rule = f"order of nn.Sequential {prefix.rstrip('.') or _ROOT}"
    for i, (name, child) in enumerate(children):
        if not _is_bn(child):
            continue
        prev_name, prev = children[i - 1] if i else ("", None)
        if prev is None or not _is_layer(prev):
            why = f"input is not a conv output ({type(prev).__name__ if prev is not None else 'the input'})"
        else:
            why = _pair_problem(prev, child, plan)
        _decide(plan, prefix + prev_name, prefix + name, why, rule)


def _decide(plan: _Plan, layer: str, bn: str, why: str | None, rule: str | None) -> None:
    if why is not None:
        plan.bn_left[bn] = why
        return
    plan.pairs.append((layer, bn))
    if rule is not None:
        plan.fallback[f"{layer} + {bn}"] = rule


def _describe(src: object, modules: dict[str, nn.Module]) -> str:
    """A few words on what produced a BN's input in the graph."""
    import torch.fx

    if not isinstance(src, torch.fx.Node):
        return "not a tensor from the graph"
    if src.op == "placeholder":
        return "the module input"
    if src.op == "call_module":
        return type(modules[src.target]).__name__
    if src.op == "call_method":
        return f".{src.target}()"
    if src.op == "call_function":
        return getattr(src.target, "__name__", str(src.target))
    return src.op


# --- folding --------------------------------------------------------------------------------------


def _apply(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each pair's BN into its layer and put an Identity where the BN was; under torch.no_grad()."""
    from torch import nn

    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        _fold(layer, bn)
        parent, _, attr = bn_name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Identity())


def _fold(layer: nn.Module, bn: nn.Module) -> None:
    """w' = w * s, b' = (b - mean) * s + beta with s = g / sqrt(var + eps); call under torch.no_grad()."""
    import torch
    from torch import nn

    w = layer.weight
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(var)
    new_bias = (bias - mean) * scale + beta
    kernel = [1] * (w.dim() - 2)  # spatial dims of a conv weight; none for Linear
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # Weight (in, out / groups, *k): output channel j * out/groups + c is column c of group j's rows.
        groups = layer.groups
        grouped = w.double().reshape(groups, w.shape[0] // groups, w.shape[1], *w.shape[2:])
        new_w = (grouped * scale.reshape(groups, 1, w.shape[1], *kernel)).reshape(w.shape)
    else:  # weight (out, in / groups, *k) or Linear's (out, in)
        new_w = w.double() * scale.reshape(-1, 1, *kernel)
    w.copy_(new_w.to(w.dtype))
    new_bias = new_bias.to(device=w.device, dtype=w.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias, requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_bias)


# --- the output check -----------------------------------------------------------------------------


def _check_input(model: nn.Module, config: FuseConfig) -> torch.Tensor:
    """Seeded standard-normal inputs on the model's device, in its floating dtype."""
    import torch

    shape = config.input_shape or (config.batch, 3, config.imgsz, config.imgsz)
    ref = next((t for t in model.parameters() if t.is_floating_point()), None)
    g = torch.Generator().manual_seed(config.seed)
    x = torch.randn(tuple(shape), generator=g)
    return x.to(ref.device, ref.dtype) if ref is not None else x


def _difference(reference: object, output: object) -> tuple[float, float]:
    """(max |output - reference|, max |reference|) over all tensors of the two outputs, in float64."""
    import torch

    refs, outs = _tensors(reference), _tensors(output)
    if not refs or len(refs) != len(outs) or any(a.shape != b.shape for a, b in zip(refs, outs, strict=True)):
        raise FuseError("cannot check the fused model: its outputs do not match the original's in structure")
    pairs = [(a.double(), b.double()) for a, b in zip(refs, outs, strict=True) if a.numel()]
    if not pairs:
        return 0.0, 0.0
    # torch's max, not Python's: a NaN anywhere must come out as NaN.
    max_abs = torch.stack([(b - a).abs().max() for a, b in pairs]).max().item()
    scale = torch.stack([a.abs().max() for a, _ in pairs]).max().item()
    return max_abs, scale


def _tensors(obj: object) -> list[torch.Tensor]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for key in obj for t in _tensors(obj[key])]
    return []
