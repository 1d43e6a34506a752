"""Range checks for the numeric options commands share, in one place.

`optkit.cli.app` runs `check_arguments` before every command body, so an absurd value
(`--imgsz 100000`, `--batch-size 0`, `--workers -1`, `--num-images -5`, `--num-classes 10**9`) is
refused before any file is read, model built or memory allocated. An option is checked by its
parameter name, whatever command declares it, so new commands get the same limits by naming their
options as the others do; a few commands have narrower ranges (COMMAND_LIMITS, e.g. profile's batch).
The bounds are optkit.limits' constants, which the requests and configs that own the options check
too (docs/architecture.md, "Values are checked once"): the message is the same whichever check sees
the value first. Checks that need the model (an `--imgsz` that is not a multiple of the model's
stride) stay with the flows.
"""

from __future__ import annotations

from typing import Any

from optkit import limits
from optkit.errors import ConfigError
from optkit.limits import Bounds

# parameter name -> its bounds (optkit.limits: the same constants the requests and configs check)
LIMITS: dict[str, Bounds] = {
    "imgsz": limits.IMGSZ,  # the stride check needs the model
    "batch_size": limits.BATCH,
    "workers": limits.WORKERS,
    "epochs": limits.EPOCHS,
    "finetune_epochs": limits.FINETUNE_EPOCHS,
    "stop_after": limits.STOP_AFTER,
    "patience": limits.PATIENCE,
    "freeze": limits.FREEZE,
    "num_classes": limits.NUM_CLASSES,
    "num_images": limits.NUM_IMAGES,
    "val_images": limits.NUM_IMAGES,
    "threads": limits.THREADS,
    "runs": limits.RUNS,
    "warmup": limits.WARMUP,
    "rounds": limits.ROUNDS,
    "top": limits.TOP,
    "amount": limits.AMOUNT,
    "lr0": limits.LR0,
    "lrf": limits.LRF,
    "label_smoothing": limits.LABEL_SMOOTHING,
    "warmup_epochs": limits.NON_NEGATIVE,
    "weight_decay": limits.NON_NEGATIVE,
    "momentum": limits.NON_NEGATIVE,
    "atol": limits.ATOL,
    "percentile": limits.PERCENTILE,
}
# narrower ranges of particular commands: (command, parameter name) -> bounds
COMMAND_LIMITS: dict[tuple[str, str], Bounds] = {
    ("profile", "batch_size"): limits.TIMED_BATCH,  # one pass of the batch is timed
    ("benchmark", "batch_size"): limits.TIMED_BATCH,
    ("export", "batch_size"): limits.TIMED_BATCH,  # the graph's batch dimension
    ("ptq-calibrate", "batch_size"): limits.CALIBRATION_BATCH,
    ("train", "fraction"): limits.FRACTION,  # profile's --fraction is a share of free memory: its own
    ("qat", "fraction"): limits.FRACTION,
}
# values outside the range that a command gives a meaning to
SPECIAL: dict[tuple[str, str], tuple[int, ...]] = {("train", "batch_size"): (-1,)}  # -1: autobatch


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_arguments(command: str, values: dict[str, Any]) -> None:
    """Raise ConfigError (or ModelError for --imgsz) naming the first option out of its range."""
    for name, value in values.items():
        bounds = COMMAND_LIMITS.get((command, name), LIMITS.get(name))
        if value is None or bounds is None or value in SPECIAL.get((command, name), ()):
            continue
        if value not in bounds:
            if name == "imgsz":  # the same words as the check that also knows the model's stride
                from optkit.models.imgsz import check_imgsz

                check_imgsz(value, name="--imgsz")
            raise ConfigError(bounds.message(flag(name), value))
