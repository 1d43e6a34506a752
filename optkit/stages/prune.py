"""Unstructured L1 pruning: zero the smallest-magnitude weights, permanently (README, `optkit prune`).

Which tensors count ("prunable weights"): the `.weight` of every Conv1d/2d/3d, ConvTranspose1d/2d/3d and
Linear module, except the model's output layers (the classifier's Linear that makes the logits, as the
model declares it: optkit.models.parts) and the modules the user names in `ignore`. Biases and norm
layers are never pruned and never counted, so the reported sparsity is the fraction of zeros among the
prunable weights, on the same basis as `--amount`.

The zeros are plain values in plain tensors (no `torch.nn.utils.prune` masks or hooks are left), so the
model saves and loads like any other. Nothing changes structurally: FLOPs and latency stay the same
unless a sparse kernel or `optkit.sparse` storage makes use of the zeros. The checkpoint records a
`{"kind": "sparsity", ...}` transform naming the pruned tensors, so that fine-tuning can keep them at
zero (`sparsity_masks` + `apply_masks_` after every optimizer step).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from optkit.errors import CheckpointError, ConfigError, OptkitError
from optkit.limits import AMOUNT
from optkit.models.layers import weight_layer_types
from optkit.transforms import register_transform

KIND = "sparsity"  # the checkpoint transform this stage owns (optkit.transforms)
VERSION = 1  # its entry layout: {"kind", "version", "params", "amount", "scope"[, "sparsity"]}
SCOPES = ("global", "layer")
PRUNABLE_TYPES = weight_layer_types()


@dataclass
class PruneConfig:
    amount: float  # target sparsity of the prunable weights, fraction in [0, 1)
    scope: str = "global"  # "global": one |w| threshold over all prunable weights; "layer": each to amount
    ignore: list[str] = field(default_factory=list)  # module names (or prefixes) kept dense, e.g. "model.0"
    include_head: bool = False  # also prune the classifier head's Linear

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        AMOUNT.check("amount", self.amount)  # the target sparsity (a workflow names its flag)
        if self.scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)} (got {self.scope!r})")
        ignore = [] if self.ignore is None else [self.ignore] if isinstance(self.ignore, str) else self.ignore
        if not isinstance(ignore, (list, tuple)) or not all(isinstance(n, str) and n for n in ignore):
            raise ConfigError(f"ignore must be a list of module names (got {self.ignore!r})")
        self.ignore = list(ignore)


@dataclass
class SparsityReport:
    layers: dict[str, tuple[int, int]]  # weight name -> (zeros, total elements)
    zeros: int  # over all prunable weights
    total: int
    amount: float | None = None  # the target, when the report comes from prune_unstructured
    scope: str | None = None

    @property
    def overall(self) -> float:
        """Achieved sparsity of the prunable weights (0 when there are none)."""
        return self.zeros / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        """Plain types only (JSON / checkpoint lineage)."""
        return {
            "amount": self.amount,
            "scope": self.scope,
            "sparsity": self.overall,
            "zeros": self.zeros,
            "total": self.total,
            "layers": {
                name: {"zeros": z, "total": t, "sparsity": z / t if t else 0.0}
                for name, (z, t) in self.layers.items()
            },
        }


def _is_any(module: nn.Module, modules: list[nn.Module]) -> bool:
    return any(module is m for m in modules)


def _matches(module_name: str, pattern: str) -> bool:
    """`pattern` names this module, one of its parents (a prefix at a '.' boundary) or its weight."""
    return (
        module_name == pattern or module_name.startswith(pattern + ".") or pattern == module_name + ".weight"
    )


def prunable_weights(
    model: nn.Module, ignore: Iterable[str] = (), include_head: bool = False
) -> dict[str, nn.Parameter]:
    """Weights that unstructured pruning may zero, by parameter name (e.g. "model.0.conv.weight")."""
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    from optkit.models.parts import output_layers

    heads = [] if include_head else output_layers(model)
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()  # a weight shared by two modules counts once
    for name, m in model.named_modules():
        if not isinstance(m, PRUNABLE_TYPES) or _is_any(m, heads) or any(_matches(name, p) for p in ignore):
            continue
        w = m.weight
        if isinstance(w, nn.parameter.UninitializedParameter) or id(w) in seen:
            continue
        seen.add(id(w))
        out[f"{name}.weight" if name else "weight"] = w
    return out


def _smallest(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of exactly k entries of a flat tensor with the smallest values.
    Ties at the threshold are broken by position (earlier first), so the result is deterministic."""
    if k <= 0:
        return torch.zeros_like(magnitudes, dtype=torch.bool)
    threshold = magnitudes.kthvalue(k).values
    mask = magnitudes < threshold
    need = k - int(mask.sum())  # how many entries equal to the threshold to take as well
    ties = (magnitudes == threshold).nonzero().view(-1)[:need]
    mask[ties] = True
    return mask


def _check_no_nan(weights: dict[str, nn.Parameter]) -> None:
    for name, w in weights.items():
        if torch.isnan(w).any():
            raise OptkitError(f"weight {name} contains NaN; magnitude pruning cannot rank it")


@torch.no_grad()
def prune_unstructured(model: nn.Module, config: PruneConfig) -> tuple[nn.Module, SparsityReport]:
    """A copy of `model` with the smallest-|w| prunable weights set to +0.0, and a report of what it holds.

    scope="global": the k = round(amount * total) smallest magnitudes over all prunable weights together;
    scope="layer": round(amount * numel) in each weight. Weights that are already zero count towards k,
    so pruning a model that is already sparser than `amount` changes nothing.
    """
    config.validate()
    for pattern in config.ignore:
        if not any(_matches(name, pattern) for name, _ in model.named_modules()):
            raise ConfigError(f"ignore: the model has no module named {pattern!r}")
    model = copy.deepcopy(model)
    weights = prunable_weights(model, config.ignore, config.include_head)
    if not weights:
        raise OptkitError(
            "nothing to prune: the model has no Conv/Linear weights outside the head and the ignored layers"
        )
    _check_no_nan(weights)
    if config.scope == "global":
        magnitudes = torch.cat([w.detach().reshape(-1).abs().float() for w in weights.values()])
        masks = _smallest(magnitudes, round(config.amount * magnitudes.numel()))
        for w, mask in zip(weights.values(), masks.split([w.numel() for w in weights.values()]), strict=True):
            w.masked_fill_(mask.view_as(w), 0)
    else:
        for w in weights.values():
            mask = _smallest(w.detach().reshape(-1).abs().float(), round(config.amount * w.numel()))
            w.masked_fill_(mask.view_as(w), 0)
    report = measure_sparsity(model, list(weights))
    report.amount, report.scope = float(config.amount), config.scope
    return model, report


def _get_weight(model: nn.Module, name: str, error: type[OptkitError] = OptkitError) -> nn.Parameter:
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise error(f"the model has no weight named {name!r}") from None


@torch.no_grad()
def measure_sparsity(model: nn.Module, names: Iterable[str]) -> SparsityReport:
    """Zeros (exact 0, either sign) per named weight and over all of them."""
    layers = {}
    for name in names:
        w = _get_weight(model, name)
        layers[name] = (int((w == 0).sum()), w.numel())
    return SparsityReport(
        layers=layers, zeros=sum(z for z, _ in layers.values()), total=sum(t for _, t in layers.values())
    )


def sparsity_transform(
    report_or_names: SparsityReport | Iterable[str], amount: float | None = None, scope: str | None = None
) -> dict:
    """The checkpoint transform entry recording which weights were pruned (plain types only).

    From a report, `amount` and `scope` default to the report's, and the achieved sparsity is recorded too.
    """
    entry: dict = {"kind": KIND, "version": VERSION}
    if isinstance(report_or_names, SparsityReport):
        entry["params"] = list(report_or_names.layers)
        amount = report_or_names.amount if amount is None else amount
        scope = report_or_names.scope if scope is None else scope
        entry["sparsity"] = report_or_names.overall
    else:
        entry["params"] = [report_or_names] if isinstance(report_or_names, str) else list(report_or_names)
    entry["amount"] = None if amount is None else float(amount)
    entry["scope"] = scope
    return entry


def _entry_params(entry: dict) -> list[str]:
    params = entry.get("params")
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise CheckpointError("damaged sparsity transform: 'params' must be a list of weight names")
    return params


def replay(model: nn.Module, entry: dict) -> nn.Module:
    """Checkpoint replay: unstructured pruning changes no structure, so the model comes back unchanged
    (after checking that the named weights exist); the zeros themselves arrive with the weights."""
    for name in _entry_params(entry):
        _get_weight(model, name, CheckpointError)
    return model


register_transform(KIND, VERSION, replay)


def sparsity_entries(transforms: list[dict]) -> list[dict]:
    """The sparsity entries of a checkpoint's transform list (the weights fine-tuning keeps at zero)."""
    return [t for t in transforms if t.get("kind") == KIND]


@torch.no_grad()
def sparsity_masks(model: nn.Module, entry: dict) -> dict[str, torch.Tensor]:
    """Bool masks of the entry's weights from their current values: True where a weight may be non-zero."""
    return {name: _get_weight(model, name) != 0 for name in _entry_params(entry)}


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """In place: set the weights outside their masks back to +0.0 (call after every optimizer step).

    masked_fill rather than `mul_(mask)`: it writes +0.0 (w * 0 is -0.0 for negative w, which `optkit.sparse`
    would have to store) and stays 0 where a weight became inf.
    """
    for name, mask in masks.items():
        w = _get_weight(model, name)
        w.masked_fill_(~mask.to(w.device), 0)
