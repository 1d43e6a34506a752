"""Structured (channel) pruning: remove whole output channels, so FLOPs, size and latency really drop.

Torch-Pruning's dependency graph finds the channels that must go together (a conv's outputs, its BatchNorm,
the inputs of every consumer, both sides of a residual add, the right slice of a concat) and removes
them as one group. Policy lives here:

- `amount` is the fraction of output channels removed from each prunable layer (Torch-Pruning's
  `pruning_ratio`). What remains is rounded *down* to a multiple of `round_to` (so more may go than
  asked); a layer whose rounded width would be 0 is left whole. The achieved channel reduction and the
  achieved reduction of prunable weights (conv and linear weights, classifier head excluded, see
  `prunable_weight_count`) are reported in the transform entry's `achieved` dict.
- The classifier head (`nn.Linear` with `num_classes` outputs in the model's last block) and the modules
  named in `ignore` keep all their output channels; the head loses input features with its producer.
- Importance (`importance`): "l1" / "l2" = group magnitude (the L1/L2 norm of each channel's weights in
  every coupled layer, averaged over the group); "bn-scale" = |gamma| of the group's BatchNorms
  (network slimming); groups without a BatchNorm are then left alone.

The result is recorded as plain data (module name, out/in, channel indices per pruned group, in order)
and rebuilt by `replay` on a freshly created model: no pickled modules, so a checkpoint still loads
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError, ConfigError, OptkitError

if TYPE_CHECKING:
    from torch import nn

KIND = "prune-structured"
IMPORTANCES = ("l1", "l2", "bn-scale")


@dataclass
class StructuredPruneConfig:
    amount: float  # fraction of output channels removed from each prunable layer, [0, 1)
    importance: str = "l1"  # "l1" | "l2" | "bn-scale"
    round_to: int = 8  # remaining channel counts rounded down to a multiple of this (1: no rounding)
    ignore: list[str] = field(default_factory=list)  # module names (or prefixes) whose outputs are kept
    imgsz: int = 64  # pixels, square example input for tracing the graph (any size the model takes)
    global_pruning: bool = False  # rank channels across all layers instead of within each layer

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        a = self.amount
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0 <= a < 1:
            raise ConfigError(f"--amount must be a fraction in [0, 1), got {a!r}")
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

    The input model is not changed. Raises OptkitError if no channel was removed.
    """
    import torch_pruning as tp

    from optkit.models.imgsz import check_imgsz, model_stride

    config.validate()
    check_imgsz(config.imgsz, model_stride(model))
    pruned = copy.deepcopy(model).eval()
    _to_normal_tensors(pruned)
    head = find_head(pruned)
    ignored = _modules_named(pruned, config.ignore)
    if head is None and not ignored:
        raise OptkitError(
            "cannot find the classifier head (an nn.Linear in the model's last block); "
            "name the output layer in --ignore so its outputs are kept"
        )
    if head is not None:
        ignored.append(head)

    weights_before, channels_before = prunable_weight_count(pruned), _channel_count(pruned)
    params_before = sum(p.numel() for p in pruned.parameters())
    with _autograd_on():  # the dependency graph is traced through autograd
        pruner = tp.pruner.BasePruner(
            pruned,
            _example_input(pruned, config.imgsz),
            importance=_importance(config.importance),
            pruning_ratio=float(config.amount),
            global_pruning=bool(config.global_pruning),
            ignored_layers=ignored,
            round_to=int(config.round_to) if config.round_to > 1 else None,
            # fresh dicts: Torch-Pruning fills these in, and its defaults are shared between calls
            in_channel_groups={},
            out_channel_groups={},
        )
        pruner.step()
    history = _plain_history(pruner.pruning_history())
    del pruner  # it holds the dependency graph (and references to every module)
    if not history:
        raise OptkitError(
            f"structured pruning removed no channels (amount {config.amount}, round_to {config.round_to}): "
            "raise --amount, or lower round_to for narrow layers"
        )

    weights_after, channels_after = prunable_weight_count(pruned), _channel_count(pruned)
    entry = {
        "kind": KIND,
        "history": history,
        "imgsz": int(config.imgsz),
        "amount": float(config.amount),
        "importance": config.importance,
        "round_to": int(config.round_to),
        "global_pruning": bool(config.global_pruning),
        "ignore": list(config.ignore),
        "achieved": {
            "channels_before": channels_before,  # output channels of prunable layers (head excluded)
            "channels_after": channels_after,
            "channel_reduction": 1 - channels_after / channels_before,  # the basis of `amount`
            "prunable_weights_before": weights_before,
            "prunable_weights_after": weights_after,
            "prunable_weight_reduction": 1 - weights_after / weights_before,
            "params_before": params_before,
            "params_after": sum(p.numel() for p in pruned.parameters()),
        },
    }
    return pruned, entry


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
        with _autograd_on():
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


def find_head(model: nn.Module) -> nn.Module | None:
    """The classifier `nn.Linear`: in `model.model[-1]` (optkit and YOLO layout), with `num_classes` outputs
    when the model states it; the last such Linear, or None."""
    from torch import nn

    blocks = getattr(model, "model", None)
    last = blocks[-1] if isinstance(blocks, nn.Sequential) and len(blocks) else model
    linears = [m for m in last.modules() if isinstance(m, nn.Linear)]
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:
        linears = [m for m in linears if m.out_features == num_classes]
    return linears[-1] if linears else None


def prunable_weight_count(model: nn.Module) -> int:
    """Elements of the weights channel pruning can shrink: every conv and linear weight except the
    classifier head's. Biases and norm layers are left out: they follow the channels and would dilute it."""
    return sum(m.weight.numel() for m in _prunable_layers(model))


def _prunable_layers(model: nn.Module) -> list[nn.Module]:
    from torch import nn

    head = find_head(model)
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return [m for m in model.modules() if isinstance(m, kinds) and m is not head]


def _channel_count(model: nn.Module) -> int:
    """Output channels (features) summed over the prunable layers: the basis of `amount`."""
    return sum(getattr(m, "out_channels", None) or m.out_features for m in _prunable_layers(model))


def _modules_named(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Modules whose name is one of `names` or starts with `name.`; every name must match something."""
    named = dict(model.named_modules())
    found = []
    for name in names:
        hits = [m for n, m in named.items() if n == name or n.startswith(name + ".")]
        if not name or not hits:
            raise ConfigError(
                f"--ignore {name!r} names no module of this model (e.g. 'model.2' or 'model.2.cv1')"
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
    """Torch-Pruning's history as [module name, is-output-pruning, [channel indices]] of builtins."""
    # an index may be a (idx, root_idx) named tuple; the root layer's own index is what replay takes
    return [[str(n), bool(out), [int(getattr(i, "root_idx", i)) for i in idxs]] for n, out, idxs in history]


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


@contextmanager
def _autograd_on():
    """Graph tracing needs autograd, also when the caller runs under no_grad or inference_mode."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield
