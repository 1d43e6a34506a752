"""The bounds of the values users give optkit, each named once (docs/architecture.md, "Values are checked
once").

The request and config dataclasses that own an option check it against these bounds in `__post_init__`
and name the option in their message (`BATCH.check("--batch-size", value)`); library configs name the
field instead (`AMOUNT.check("amount", value)`), and the FieldError they raise carries the field and the
words after it, so a flow can say its flag instead (`error.for_option("--amount")`); a message over
several fields is a FieldsError, and a flow words both kinds with `options_named(FLAGS)`. The CLI's shared
checks (optkit.cli.checks) use the same constants, so a value out of range gets the same one-line
message whichever check sees it first:

    --batch-size must be an integer in [1, 65536], got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from optkit.errors import ConfigError, OptkitError


class FieldError(ConfigError):
    """A value that is out of range or not allowed: `field` (a config field or an option) and `detail`,
    the words after it ("must be in [0, 1), got 1.0")."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field} {detail}")

    def for_option(self, option: str) -> FieldError:
        """The same mistake, told in terms of the option that set the field (e.g. "--amount")."""
        return FieldError(option, self.detail)


class FieldsError(OptkitError):
    """A problem told in terms of several fields ("round_to 2048 is wider than every prunable layer ...:
    use round_to 640 or less"). `template` (str.format) writes each field of `fields` as {field} and the
    facts in `values` as {name}; the message names the fields, `for_options` names the options instead.
    A subclass mixes in what kind of error it is (ConfigFieldsError; CheckpointError, ...)."""

    def __init__(self, template: str, fields: Iterable[str], **values: Any):
        self.template, self.fields, self.values = template, tuple(fields), values
        super().__init__(self.worded({}))

    def worded(self, options: Mapping[str, str]) -> str:
        """The message with each field named as in `options` (e.g. {"amount": "--amount"}), or by itself."""
        return self.template.format(**{f: options.get(f, f) for f in self.fields}, **self.values)

    def for_options(self, options: Mapping[str, str]) -> FieldsError:
        """The same error (its type and facts), told in terms of the options that set the fields."""
        error = type(self).__new__(type(self))
        error.__dict__.update(self.__dict__)
        error.args = (self.worded(options),)
        return error


class ConfigFieldsError(FieldsError, ConfigError):
    """A FieldsError that is a ConfigError: option values that do not work together or with the model."""


@contextmanager
def options_named(options: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, a FieldError or FieldsError about a field in `options` (field -> option, e.g.
    {"round_to": "--round-to"}) is raised again naming the option: how a flow words a library's errors."""
    try:
        yield
    except FieldError as e:
        if e.field not in options:
            raise
        raise e.for_option(options[e.field]) from None
    except FieldsError as e:
        if not set(e.fields) & set(options):
            raise
        raise e.for_options(options) from None


@dataclass(frozen=True)
class Bounds:
    """A closed or half-open interval of accepted values; `high` None: no upper bound."""

    low: float
    high: float | None = None
    integer: bool = True  # ints only (a bool is not an int here)
    low_open: bool = False  # `low` itself is refused
    high_open: bool = False  # `high` itself is refused

    def __contains__(self, value: Any) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            return False  # NaN and inf fail here: no comparison below would
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)

    def words(self) -> str:
        """What is accepted: 'an integer in [1, 65536]', 'in [0, 1)', '> 0'."""
        kind = "an integer " if self.integer else ""
        low = _number(self.low)
        if self.high is None:
            return f"{kind}{'>' if self.low_open else '>='} {low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind}in {left}{low}, {_number(self.high)}{right}"

    def message(self, name: str, value: Any, hint: str = "") -> str:
        return f"{name} {self.refusal(value, hint)}"

    def refusal(self, value: Any, hint: str = "") -> str:
        return f"must be {self.words()}{hint}, got {value!r}"

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        """`value` when it is within bounds, else a FieldError naming `name` (an option or a field)."""
        if value not in self:
            raise FieldError(name, self.refusal(value, hint))
        return value


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"  # 100000, not 1e+05; 0.5, not 0.500000


# --- sizes that drive allocation: refused before anything is built ----------------------------------
IMGSZ = Bounds(32, 4096)  # pixels, square side; also a multiple of the model's stride (optkit.models.imgsz)
BATCH = Bounds(1, 65536)  # images per step (train, val, prune's fine-tune)
TIMED_BATCH = Bounds(1, 1024)  # images per timed pass (profile, benchmark) and export's graph batch
CALIBRATION_BATCH = Bounds(1, 4096)  # images per calibration pass (ptq-calibrate)
NUM_CLASSES = Bounds(1, 100_000)  # classifier outputs (a file's class list too; ImageNet-21k: 21,841)
NUM_IMAGES = Bounds(1, 100_000)  # calibration / comparison images: more is never needed, only slower
WORKERS = Bounds(0, 256)  # DataLoader processes
THREADS = Bounds(1, 1024)  # CPU threads

# --- counts -----------------------------------------------------------------------------------------
EPOCHS = Bounds(1, 100_000)
FINETUNE_EPOCHS = Bounds(0, 100_000)  # 0: no fine-tuning
STOP_AFTER = Bounds(1, 100_000)  # epochs this run trains before stopping (resume later)
PATIENCE = Bounds(0, 1_000_000)  # epochs without improvement before stopping early
FREEZE = Bounds(0, 1_000_000)  # leading blocks frozen
CLOSE_MOSAIC = Bounds(0, 100_000)  # detect: final epochs without mosaic
RUNS = Bounds(1, 1_000_000)  # timed passes
WARMUP = Bounds(0, 1_000_000)  # untimed passes
ROUNDS = Bounds(1, 1000)  # benchmark's interleaved rounds
TOP = Bounds(1, 100_000)  # table rows shown
MAX_DET = Bounds(1, 100_000)  # detections kept per image
ROUND_TO = Bounds(1, 1024)  # structured prune: kept channels are a multiple of this

# --- fractions and rates ----------------------------------------------------------------------------
SCORE = Bounds(0, 1, integer=False)  # detect: a confidence or IoU threshold
AMOUNT = Bounds(0, 1, integer=False, high_open=True)  # prune: fraction of weights / channels removed
FRACTION = Bounds(0, 1, integer=False, low_open=True)  # share of a dataset used
LABEL_SMOOTHING = Bounds(0, 1, integer=False, high_open=True)
LR0 = Bounds(0, integer=False, low_open=True)  # initial learning rate
LRF = Bounds(0, 1, integer=False, low_open=True)  # final learning rate, as a fraction of lr0
NON_NEGATIVE = Bounds(0, integer=False)  # warm-up epochs, weight decay, momentum
ATOL = Bounds(0, integer=False, low_open=True)  # fuse's output check: max |Δ| / max |output|
PERCENTILE = Bounds(0, 100, integer=False, low_open=True)  # calibration: the |x| percentile kept
