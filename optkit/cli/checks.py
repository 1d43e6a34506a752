"""Range checks for the numeric options commands share, in one place.

`optkit.cli.app` runs `check_arguments` before every command body, so an absurd value
(`--imgsz 100000`, `--batch-size 0`, `--workers -1`, `--num-images -5`, `--num-classes 10**9`) is
refused before any file is read, model built or memory allocated. An option is checked by its
parameter name, whatever command declares it, so new commands get the same limits by naming their
options as the others do. Commands keep their own narrower checks (e.g. profile's batch <= 1024) and
the checks that need the model (an `--imgsz` that is not a multiple of the model's stride).
"""

from __future__ import annotations

import math
from typing import Any

from optkit.errors import ConfigError

MAX_CLASSES = 100_000  # same bound as a checkpoint's class list (optkit.checkpoint.MAX_CLASSES)

# parameter name -> (lowest, highest) accepted integer
LIMITS: dict[str, tuple[int, int]] = {
    "imgsz": (32, 4096),  # pixels (optkit.models.imgsz.MAX_IMGSZ); the stride check needs the model
    "batch_size": (1, 65536),  # images
    "workers": (0, 256),  # DataLoader processes
    "epochs": (1, 100_000),
    "finetune_epochs": (0, 100_000),
    "num_classes": (1, MAX_CLASSES),
    "num_images": (1, 10_000_000),  # calibration images
    "val_images": (1, 10_000_000),  # images compared after calibration
    "threads": (1, 1024),
    "runs": (1, 1_000_000),  # timed passes
    "warmup": (0, 1_000_000),  # untimed passes
    "top": (1, 100_000),  # rows shown
}
# narrower ranges of particular commands: (command, parameter name) -> (lowest, highest)
COMMAND_LIMITS: dict[tuple[str, str], tuple[int, int]] = {
    ("profile", "batch_size"): (1, 1024),  # one pass of the batch is timed: optkit.measure.profile
    ("benchmark", "batch_size"): (1, 1024),
    ("export", "batch_size"): (1, 1024),  # the graph's batch dimension
}
# values outside the range that a command gives a meaning to
SPECIAL: dict[tuple[str, str], tuple[int, ...]] = {("train", "batch_size"): (-1,)}  # -1: autobatch
# fractions: parameter name -> (low, high, whether high is included)
FRACTIONS: dict[str, tuple[float, float, bool]] = {"amount": (0.0, 1.0, False)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_arguments(command: str, values: dict[str, Any]) -> None:
    """Raise ConfigError (or ModelError for --imgsz) naming the first option out of its range."""
    for name, value in values.items():
        if value is None:
            continue
        if name in LIMITS:
            _check_int(command, name, value)
        elif name in FRACTIONS:
            _check_fraction(name, value)


def _check_int(command: str, name: str, value: Any) -> None:
    lo, hi = COMMAND_LIMITS.get((command, name), LIMITS[name])
    if value in SPECIAL.get((command, name), ()):
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        if name == "imgsz":  # the same words as the check that also knows the model's stride
            from optkit.models.imgsz import check_imgsz

            check_imgsz(value)
        raise ConfigError(f"{flag(name)} must be an integer in [{lo}, {hi}], got {value!r}")


def _check_fraction(name: str, value: Any) -> None:
    lo, hi, hi_ok = FRACTIONS[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo <= value <= hi if hi_ok else lo <= value < hi):
        raise ConfigError(f"{flag(name)} must be in [{lo:g}, {hi:g}{']' if hi_ok else ')'}, got {value!r}")
