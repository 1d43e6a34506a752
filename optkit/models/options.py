"""Checks for numeric model options, raising ModelError with the option's name and the rule."""

from __future__ import annotations

import numbers

from optkit.errors import ModelError


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value: object) -> float:
    """A multiplier such as width_multiple: a number > 0."""
    if not _is_number(value) or not value > 0:
        raise ModelError(f"{name} must be a number > 0 (got {value!r})")
    return float(value)


def check_dropout(value: object) -> float:
    """A dropout probability in [0, 1): p = 1 would zero every feature."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ModelError(f"dropout must be a number in [0, 1) (got {value!r})")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{name} must be true or false (got {value!r})")
    return value
