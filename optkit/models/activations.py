"""Activation functions a model can be built with, chosen by name (a JSON-simple model option)."""

from __future__ import annotations

from torch import nn

from optkit.errors import ModelError

# Sorted, because error messages and docs list them in this order.
ACTIVATIONS = ("hardswish", "relu", "relu6", "silu")

_CLASSES: dict[str, type[nn.Module]] = {
    "hardswish": nn.Hardswish,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
}


def check_act(name: object) -> str:
    """Return `name` if it is a known activation name, else raise ModelError listing the choices."""
    if not isinstance(name, str) or name not in _CLASSES:
        raise ModelError(f"act must be one of {', '.join(ACTIVATIONS)} (got {name!r})")
    return name


def make_act(name: str) -> nn.Module:
    """A new activation module. In place, as YOLO does: saves one tensor of memory per layer,
    and all four are safe in place after BatchNorm or an addition (autograd checks it)."""
    return _CLASSES[check_act(name)](inplace=True)
