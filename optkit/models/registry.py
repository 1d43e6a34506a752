"""The model registry: `@register_model` names a factory, `create_model` is the one way to build a model.

A checkpoint stores `arch_name`, `num_classes` and `arch_options`; `create_model` with those values
rebuilds the same architecture, so options must be JSON-simple (str, int, float, bool, None).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from optkit.errors import ModelError

_JSON_SIMPLE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name."""

    name: str
    factory: Callable[..., nn.Module]  # fn(num_classes: int = 10, **options) -> nn.Module
    default_imgsz: int  # pixels, square side the model was designed for
    description: str
    is_test: bool = False  # tiny models for tests; hidden from list_models() by default
    task: str = "classify"  # what the model does (optkit.tasks): its data, loss and metrics


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, default_imgsz: int, description: str, is_test: bool = False, task: str = "classify"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register `fn(num_classes=10, **options) -> nn.Module` under `name`.

    The factory names each option as a keyword parameter with a default (no `**kwargs`):
    `create_model` reads the valid option names from its signature.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, default_imgsz, description, is_test, task)
        return fn

    return decorate


def list_models(include_test: bool = False) -> list[str]:
    """Registered model names, sorted; test models only when asked for."""
    return sorted(n for n, s in _REGISTRY.items() if include_test or not s.is_test)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        known = ", ".join(list_models())
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[name]


def option_names(spec: ModelSpec) -> list[str]:
    """The options a model takes: its factory's keyword parameters other than num_classes."""
    params = inspect.signature(spec.factory).parameters
    return sorted(p for p in params if p != "num_classes")


def _check_options(spec: ModelSpec, options: dict[str, object]) -> None:
    valid = option_names(spec)
    for key, value in options.items():
        if key not in valid:
            raise ModelError(
                f"unknown option {key!r} for model {spec.name!r}; valid options: {', '.join(valid) or 'none'}"
            )
        if not isinstance(value, _JSON_SIMPLE):
            raise ModelError(f"option {key!r} for model {spec.name!r} must be a str, number, bool or None")


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ModelError(f"num_classes must be an integer >= 1 (got {num_classes!r})")
    return int(num_classes)


def create_model(name: str, num_classes: int = 10, **options: object) -> nn.Module:
    """Build a registered model with fresh weights.

    The result carries `stride` (total downsampling, pixels), `num_classes`, `arch_name` and
    `arch_options` (the options given here, not the defaults), so that
    `create_model(m.arch_name, m.num_classes, **m.arch_options)` rebuilds it.
    """
    spec = get_spec(name)
    _check_options(spec, options)
    num_classes = _check_num_classes(num_classes)
    model = spec.factory(num_classes=num_classes, **options)
    model.stride = int(getattr(model, "stride", 32))
    model.num_classes = num_classes
    model.arch_name = name
    model.arch_options = dict(options)
    return model
