"""Structured (channel) pruning: remove whole output channels, so FLOPs, size and latency really drop.

Torch-Pruning's dependency graph finds the channels that must go together (a conv's outputs, its BatchNorm,
the inputs of every consumer, both sides of a residual add, the right slice of a concat) and removes
them as one group. Policy lives here:

- `amount` is the fraction of output channels removed from each prunable layer (Torch-Pruning's
  `pruning_ratio`). What remains is rounded *down* to a multiple of `round_to` (so more may go than
  asked), but never below `round_to` channels (1 with `round_to` 1): a layer at that floor is at its
  minimum width and keeps it at any higher amount, and a layer narrower than `round_to` is left whole
  (no multiple of `round_to` fits). So no layer gets wider as `amount` rises, and the achieved
  reduction never falls (see `kept_channels`). The achieved channel reduction and the achieved reduction
  of prunable weights (conv and linear weights, classifier head excluded, see `prunable_weight_count`)
  are reported in the transform entry's `achieved` dict.
- The model's output layers (the classifier's Linear; a foreign detection head block whole, see
  optkit.models.parts) and the modules named in `ignore` keep all their output channels; the output
  layer loses input features with its producer. A detector's output convs (box DFL bins, class
  scores) are its output layers; the DFL decode after them has no weights and nothing to prune. A C2f
  block's cv1 keeps its outputs too: the block splits them into halves of a width fixed at build time
  (see `_split_convs`, and `_traceable_splits` for how such a block is traced).
- Importance (`importance`): "l1" / "l2" = group magnitude (the L1/L2 norm of each channel's weights in
  every coupled layer, averaged over the group); "bn-scale" = |gamma| of the group's BatchNorms
  (network slimming); groups without a BatchNorm are then left alone.

The result is recorded as plain data (module name, out/in, channel indices per pruned group, in order)
and rebuilt by `replay` on a freshly created model: no pickled modules, so a checkpoint still loads
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError, ConfigError
from optkit.limits import AMOUNT, ConfigFieldsError, FieldError, FieldsError
from optkit.transforms import register_transform

if TYPE_CHECKING:
    from torch import nn

KIND = "prune-structured"  # the checkpoint transform this stage owns (optkit.transforms)
VERSION = 1  # its entry layout: see structured_transform
IMPORTANCES = ("l1", "l2", "bn-scale")
FIELDS = ("amount", "importance", "round_to", "ignore")  # what a message may name (a flow: its flags)


class NothingRemoved(ConfigFieldsError):
    """A pruning step removed no channel. The message says why and what would remove some: `field`, the
    config field to change (None when nothing can), and `suggested`, a value of it that removes channels
    (None when the message names none). The fields are named as StructuredPruneConfig's; a flow names its
    flags (`for_options`)."""

    def __init__(self, template: str, field: str | None = None, suggested=None, **values):
        self.field, self.suggested = field, suggested
        super().__init__(template, FIELDS, **values)


@dataclass
class StructuredPruneConfig:
    amount: float  # fraction of output channels removed from each prunable layer, [0, 1)
    importance: str = "l1"  # "l1" | "l2" | "bn-scale"
    round_to: int = 8  # remaining channel counts rounded down to a multiple of this, never below it
    ignore: list[str] = field(default_factory=list)  # module names (or prefixes) whose outputs are kept
    imgsz: int = 64  # pixels, square example input for tracing the graph (any size the model takes)
    global_pruning: bool = False  # rank channels across all layers instead of within each layer

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        AMOUNT.check("amount", self.amount)  # of each layer's output channels (a workflow names its flag)
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"unknown importance {self.importance!r}; choose one of {', '.join(IMPORTANCES)}"
            )
        r = self.round_to
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
            raise ConfigError(f"round_to must be an integer >= 1, got {r!r}")
        if isinstance(self.ignore, str) or not all(isinstance(n, str) for n in self.ignore):
            raise ConfigError("ignore must be a list of module names")


def prune_structured(model: nn.Module, config: StructuredPruneConfig) -> tuple[nn.Module, dict]:
    """Return (a pruned copy in eval mode, the transform entry that `replay` rebuilds it from).

    The input model is not changed. Raises NothingRemoved if no channel was removed.
    """
    from optkit.models.imgsz import check_imgsz, model_stride

    config.validate()
    check_imgsz(config.imgsz, model_stride(model))
    pruned = copy.deepcopy(model).eval()
    _to_normal_tensors(pruned)
    heads = _kept_layers(pruned)
    ignored = _modules_named(pruned, config.ignore)
    if not heads and not ignored:
        raise FieldsError(
            "cannot tell the model's output layer (it declares no head, and has no nn.Linear with "
            "num_classes outputs); name the output layer in {ignore} so its outputs are kept",
            ["ignore"],
        )
    ignored.extend(heads + _split_convs(pruned))

    weights_before, channels_before = prunable_weight_count(pruned), _channel_count(pruned)
    params_before = sum(p.numel() for p in pruned.parameters())
    # the dependency graph is traced through autograd
    with _autograd_on(), _traceable_splits(pruned):
        pruner = _floored_pruner_type()(
            pruned,
            _example_input(pruned, config.imgsz),
            importance=_importance(config.importance),
            pruning_ratio=float(config.amount),
            global_pruning=bool(config.global_pruning),
            ignored_layers=ignored,
            # also 1: Torch-Pruning calls the rounding hook (our floor) only when round_to is set
            round_to=int(config.round_to),
            # fresh dicts: Torch-Pruning fills these in, and its defaults are shared between calls
            in_channel_groups={},
            out_channel_groups={},
        )
        pruner.step()
        history = _plain_history(pruner.pruning_history())
        if not history:
            raise _why_nothing_was_removed(pruner, pruned, config)
    del pruner  # it holds the dependency graph (and references to every module)

    weights_after, channels_after = prunable_weight_count(pruned), _channel_count(pruned)
    achieved = {
        "channels_before": channels_before,  # output channels of prunable layers (head excluded)
        "channels_after": channels_after,
        "channel_reduction": 1 - channels_after / channels_before,  # the basis of `amount`
        "prunable_weights_before": weights_before,
        "prunable_weights_after": weights_after,
        "prunable_weight_reduction": 1 - weights_after / weights_before,
        "params_before": params_before,
        "params_after": sum(p.numel() for p in pruned.parameters()),
    }
    entry = structured_transform(history, config, achieved)
    return pruned, entry


def structured_transform(history: list, config: StructuredPruneConfig, achieved: dict) -> dict:
    """The checkpoint's record of a structured prune: Torch-Pruning's history (module name, whether
    output channels, channel indices; per pruned group, in order), the trace size `replay` needs, the
    config and what was achieved."""
    return {
        "kind": KIND,
        "version": VERSION,
        "history": history,
        "imgsz": int(config.imgsz),
        "amount": float(config.amount),
        "importance": config.importance,
        "round_to": int(config.round_to),
        "global_pruning": bool(config.global_pruning),
        "ignore": list(config.ignore),
        "achieved": achieved,
    }


def replay(model: nn.Module, entry: dict) -> nn.Module:
    """Apply a recorded pruning history to `model`, a freshly built model of the same architecture.

    Changes `model` in place (it is part of rebuilding, not a user-facing stage) and returns it; its
    state_dict then has the pruned model's keys and shapes, ready for `load_state_dict(strict=True)`.
    """
    import torch_pruning as tp

    history, imgsz = entry.get("history"), entry.get("imgsz")
    if not isinstance(history, list) or not isinstance(imgsz, int) or imgsz <= 0:
        raise CheckpointError("damaged prune-structured transform (no history or imgsz)")
    was_training = model.training
    model.eval()  # tracing runs a forward pass: do not update BatchNorm statistics
    _to_normal_tensors(model)
    try:
        with _autograd_on(), _traceable_splits(model):
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=_example_input(model, imgsz))
            graph.load_pruning_history(
                [[str(n), bool(out), [int(i) for i in idxs]] for n, out, idxs in history]
            )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(
            f"cannot replay structured pruning on this architecture ({first}); "
            "was the checkpoint made from a different model?"
        ) from None
    model.train(was_training)
    return model


register_transform(KIND, VERSION, replay)


def _kept_layers(model: nn.Module) -> list[nn.Module]:
    """Modules whose output channels stay: the model's output layers, and a head block whose output
    layers cannot be told (a foreign detection head), as optkit.models.parts declares them."""
    from optkit.models.parts import kept_whole, output_layers

    modules = dict(model.named_modules())
    return output_layers(model) + [modules[name] for name in kept_whole(model)]


def prunable_weight_count(model: nn.Module) -> int:
    """Elements of the weights channel pruning can shrink: every conv and linear weight except the
    classifier head's. Biases and norm layers are left out: they follow the channels and would dilute it."""
    return sum(m.weight.numel() for m in _prunable_layers(model))


def _prunable_layers(model: nn.Module) -> list[nn.Module]:
    from torch import nn

    from optkit.models.parts import output_layers

    heads = output_layers(model)
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return [m for m in model.modules() if isinstance(m, kinds) and not any(m is h for h in heads)]


def _channel_count(model: nn.Module) -> int:
    """Output channels (features) summed over the layers whose outputs can be pruned (the prunable
    layers but a C2f's split cv1, see `_split_convs`): the basis of `amount`."""
    split = _split_convs(model)
    return sum(
        getattr(m, "out_channels", None) or m.out_features
        for m in _prunable_layers(model)
        if not any(m is s for s in split)
    )


def _modules_named(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Modules whose name is one of `names` or starts with `name.`; every name must match something
    (else a FieldError for `ignore`)."""
    named = dict(model.named_modules())
    found = []
    for name in names:
        hits = [m for n, m in named.items() if n == name or n.startswith(name + ".")]
        if not name or not hits:
            raise FieldError(
                "ignore", f"{name!r} names no module of this model (e.g. 'model.2' or 'model.2.cv1')"
            )
        found.extend(hits)
    return found


def _importance(name: str):
    import torch_pruning as tp

    if name == "bn-scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _example_input(model: nn.Module, imgsz: int):
    import torch

    p = next(model.parameters())
    return torch.randn(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype)


def _plain_history(history) -> list[list]:
    """Torch-Pruning's history as [module name, is-output-pruning, [channel indices]] of builtins.

    Entries with no indices (a layer already at its minimum width, see `kept_channels`) change nothing
    and are left out."""
    # an index may be a (idx, root_idx) named tuple; the root layer's own index is what replay takes
    return [
        [str(n), bool(out), [int(getattr(i, "root_idx", i)) for i in idxs]]
        for n, out, idxs in history
        if idxs
    ]


def kept_channels(width: int, asked: int, round_to: int) -> int:
    """Output channels a layer of `width` keeps when the amount asks to keep `asked` of them.

    Rounded down to a multiple of `round_to`, but never below `round_to` (the layer's minimum width), so
    the result never grows as `asked` falls. A layer narrower than `round_to` keeps all its channels: no
    multiple of `round_to` fits in it (with `round_to` 1 that never happens, and the minimum is 1).
    """
    if width < round_to:
        return width
    return min(width, max(asked - asked % round_to, round_to))


@functools.cache
def _floored_pruner_type():
    """Torch-Pruning's BasePruner with `kept_channels` as its rounding rule.

    Its own rule rounds what stays down to 0 when fewer than `round_to` channels are asked to stay, and
    then refuses the group as a whole (a layer cannot lose all its channels): a higher amount left more
    layers whole, so the model got *bigger* as `amount` rose."""
    import torch_pruning as tp

    class FlooredPruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            keep = kept_channels(current_channels, current_channels - n_pruned, round_to)
            return current_channels - keep  # channels to remove; 0 leaves the layer as it is

    return FlooredPruner


def _why_nothing_was_removed(pruner, model: nn.Module, config: StructuredPruneConfig) -> NothingRemoved:
    """The error when a pruning step removed no channel: why, and what would remove some."""
    widths = _group_widths(pruner, model)
    r = config.round_to
    if not widths:
        if config.importance == "bn-scale":
            return NothingRemoved(
                "{importance} bn-scale ranks channels by their BatchNorm scale, and no prunable layer of "
                "this model has a BatchNorm: use {importance} l1 or l2",
                "importance",
                "l1",
            )
        return NothingRemoved(
            "no layer can lose channels: every conv/linear layer is the classifier head or kept whole "
            "({ignore}, or an output layer of a detection head); ignore fewer layers",
            "ignore",
        )
    name, widest = max(widths.items(), key=lambda kv: kv[1])
    if widest <= 1:
        return NothingRemoved(
            "the model is at its minimum width (1 channel per prunable layer): nothing more can be removed"
        )
    if widest < r:  # no layer fits a multiple of round_to: all are left whole (kept_channels)
        return NothingRemoved(
            "{round_to} {r} is wider than every prunable layer (the widest, {layer}, has {widest} channels), "
            "and a pruned layer keeps a multiple of it: use {round_to} {lower} or less",
            "round_to",
            widest // 2,
            r=r, layer=name, widest=widest, lower=widest // 2,
        )  # fmt: skip
    if widest == r:  # every layer at its floor (kept_channels): no amount removes anything
        return NothingRemoved(
            "the model is at its minimum width for {round_to} {r}: no prunable layer has more than {r} "
            "channels, the fewest a pruned layer keeps; use {round_to} {lower} or less to remove more",
            "round_to",
            widest // 2,
            r=r, lower=widest // 2,
        )  # fmt: skip
    if config.amount == 0:
        return NothingRemoved(
            "{amount} 0 removes no channels: any amount above 0 removes some (e.g. {amount} 0.3)",
            "amount",
            0.3,
        )
    smallest = _ceil_2_digits(1 / widest)  # keeps at most widest - 1 of the widest layer's channels
    if config.amount < float(smallest):  # so small that widest * (1 - amount) still rounds to widest
        return NothingRemoved(
            "{amount} {value:g} is too small to remove a channel: from {amount} {smallest} on, "
            "{layer} ({widest} channels) loses at least one",
            "amount",
            float(smallest),
            value=config.amount, smallest=smallest, layer=name, widest=widest,
        )  # fmt: skip
    # global ranking: the least important channels all lie in layers already at their minimum width
    return NothingRemoved(
        "{amount} {value:g} removes no channel: with global ranking, the channels it picks are all "
        "in layers already at their minimum width ({r} channels); raise {amount}",
        "amount",
        value=config.amount, r=r,
    )  # fmt: skip


def _group_widths(pruner, model: nn.Module) -> dict[str, int]:
    """Channels of every group the pruner could prune (its importance can rank them), by root layer name."""
    names = {m: n for n, m in model.named_modules()}
    graph = pruner.DG
    widths = {}
    for group in graph.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        scores = pruner.estimate_importance(group)
        if scores is not None:
            widths[names.get(group[0].dep.target.module, "?")] = len(scores)
    return widths


def _ceil_2_digits(x: float) -> str:
    """`x` rounded *up* to 2 significant digits, as a decimal string (0.00078125 -> "0.00079")."""
    exponent = math.floor(math.log10(x)) - 1
    return f"{math.ceil(x / 10**exponent) * 10**exponent:.2g}"


def _to_normal_tensors(model: nn.Module) -> None:
    """Replace inference-mode tensors (a model built under `torch.inference_mode`) with normal copies:
    autograd, which traces the graph, refuses them."""
    import torch
    from torch import nn

    with torch.inference_mode(False):
        for m in model.modules():
            for name, p in m._parameters.items():
                if p is not None and p.is_inference():
                    m._parameters[name] = nn.Parameter(p.clone(), requires_grad=p.requires_grad)
            for name, b in m._buffers.items():
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()


def _split_convs(model: nn.Module) -> list[nn.Module]:
    """The convs whose output a block splits at a width fixed when it was built, so their output
    channels stay: a detector's C2f blocks split cv1's output into halves of `c` channels (`c` is an
    attribute, read by the forward). Their input channels still follow their producers."""
    from optkit.models.detect_blocks import C2f

    return [m.cv1.conv for m in model.modules() if isinstance(m, C2f)]


def _c2f_sliced_forward(self, x):
    """C2f's forward with the same result, written so Torch-Pruning can trace it: cv1's whole output
    stands in the concat for its two halves, and the second half reaches the bottlenecks by slicing."""
    import torch

    y = self.cv1(x)
    last = y[:, self.c :]
    pieces = [y]
    for block in self.m:
        last = block(last)
        pieces.append(last)
    return self.cv2(torch.cat(pieces, 1))


@contextmanager
def _traceable_splits(model: nn.Module):
    """While the dependency graph is traced (pruning and `replay` alike), C2f blocks run
    `_c2f_sliced_forward`. Their forward splits cv1's output and sends the second half to several
    layers (the first bottleneck, its residual add, the concat); Torch-Pruning maps a split's outputs
    to its consumers one to one and fails on that (an IndexError in its concat index mapping), while a
    slice's channels are mapped for any number of consumers."""
    import types

    from optkit.models.detect_blocks import C2f

    blocks = [m for m in model.modules() if isinstance(m, C2f)]
    for block in blocks:
        block.forward = types.MethodType(_c2f_sliced_forward, block)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the class's forward again


@contextmanager
def _autograd_on():
    """Graph tracing needs autograd, also when the caller runs under no_grad or inference_mode."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield
