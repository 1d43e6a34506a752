"""Each value is checked once against one named bound (optkit.limits): the CLI's shared checks and the
request or config that owns the option refuse the same values with the same one-line message."""

from __future__ import annotations

import math

import pytest

from optkit import limits
from optkit.cli.checks import COMMAND_LIMITS, LIMITS, check_arguments
from optkit.errors import OptkitError
from optkit.limits import Bounds, FieldError


@pytest.mark.parametrize(
    "bounds, inside, outside",
    [
        (limits.BATCH, [1, 65536], [0, 65537, 2.0, True, "8", None]),
        (limits.AMOUNT, [0, 0.0, 0.5, 0.999], [1, 1.0, -0.1, math.nan, math.inf, True, "0.3"]),
        (limits.FRACTION, [1, 1e-9], [0, 0.0, 1.5, math.nan]),
        (limits.LR0, [1e-9, 10], [0, -1, math.inf, math.nan]),
        (limits.NON_NEGATIVE, [0, 0.0, 5], [-1e-9, math.nan]),
    ],
)
def test_bounds_accept_exactly_their_interval(bounds, inside, outside):
    assert all(v in bounds for v in inside), [v for v in inside if v not in bounds]
    assert not any(v in bounds for v in outside), [v for v in outside if v in bounds]


def test_bounds_say_what_they_accept():
    assert limits.BATCH.message("--batch-size", 0) == "--batch-size must be an integer in [1, 65536], got 0"
    assert limits.AMOUNT.message("--amount", 1.0) == "--amount must be in [0, 1), got 1.0"
    assert limits.FRACTION.words() == "in (0, 1]" and limits.LR0.words() == "> 0"
    assert limits.RUNS.words() == "an integer in [1, 1000000]"  # never 1e+06
    with pytest.raises(FieldError) as info:
        limits.AMOUNT.check("amount", 1.0)
    assert (info.value.field, info.value.detail) == ("amount", "must be in [0, 1), got 1.0")
    assert str(info.value.for_option("--amount")) == "--amount must be in [0, 1), got 1.0"
    assert limits.BATCH.check("--batch-size", 8) == 8


def _cli_message(command: str, name: str, value) -> str:
    with pytest.raises(OptkitError) as info:  # ConfigError; ModelError for --imgsz
        check_arguments(command, {name: value})
    return str(info.value)


def _message(make) -> str:
    with pytest.raises(OptkitError) as info:
        make()
    return str(info.value)


def _prune(**changes):
    from optkit.workflows.prune import PruneRequest

    return PruneRequest(**{"weights": "m.pt", "amount": 0.3, **changes})


def _request(module: str, name: str, *args, **changes):
    """A flow's request made with `changes` (benchmark's checks its values in `validate`)."""
    import importlib

    request = getattr(importlib.import_module(f"optkit.workflows.{module}"), name)(*args, **changes)
    return request.validate() if hasattr(request, "validate") else request


def _train(**changes):
    """TrainConfig, which names its fields, checked as the train flow checks it (naming the flags)."""
    from optkit.limits import options_named
    from optkit.train.config import TrainConfig
    from optkit.workflows.train import FLAGS

    with options_named(FLAGS):
        return TrainConfig(**{"model": "test-tiny", **changes}).validate()


@pytest.mark.parametrize(
    "command, name, value, owner",
    [
        ("prune", "amount", 1.0, lambda: _prune(amount=1.0)),
        ("prune", "amount", math.nan, lambda: _prune(amount=math.nan)),
        ("prune", "batch_size", 0, lambda: _prune(batch_size=0, data="d")),
        ("prune", "finetune_epochs", -1, lambda: _prune(finetune_epochs=-1)),
        ("prune", "workers", -1, lambda: _prune(workers=-1)),
        ("train", "epochs", 0, lambda: _train(epochs=0)),
        ("train", "imgsz", 100_000, lambda: _train(imgsz=100_000)),
        ("train", "workers", 300, lambda: _train(workers=300)),
        ("train", "fraction", 1.5, lambda: _train(fraction=1.5)),
        ("train", "lr0", 0.0, lambda: _train(lr0=0.0)),
        ("train", "lrf", 2.0, lambda: _train(lrf=2.0)),
        ("train", "label_smoothing", 1.0, lambda: _train(label_smoothing=1.0)),
        ("train", "momentum", -0.5, lambda: _train(momentum=-0.5)),
        ("train", "patience", -1, lambda: _train(patience=-1)),
        ("train", "stop_after", 0, lambda: _train(stop_after=0)),
        ("val", "batch_size", 0, lambda: _request("val", "ValRequest", "m.pt", batch_size=0)),
        ("profile", "batch_size", 1025, lambda: _request("profile", "ProfileRequest", batch_size=1025)),
        ("profile", "warmup", -1, lambda: _request("profile", "ProfileRequest", warmup=-1)),
        ("profile", "runs", 0, lambda: _request("profile", "ProfileRequest", runs=0)),
        ("profile", "top", 0, lambda: _request("profile", "ProfileRequest", top=0)),
        ("profile", "threads", 2000, lambda: _request("profile", "ProfileRequest", threads=2000)),
        (
            "benchmark",
            "batch_size",
            1025,
            lambda: _request("benchmark", "BenchmarkRequest", ["m.pt"], batch=1025),
        ),
        ("benchmark", "runs", 0, lambda: _request("benchmark", "BenchmarkRequest", ["m.pt"], runs=0)),
        ("benchmark", "warmup", -1, lambda: _request("benchmark", "BenchmarkRequest", ["m.pt"], warmup=-1)),
        (
            "benchmark",
            "rounds",
            1001,
            lambda: _request("benchmark", "BenchmarkRequest", ["m.pt"], rounds=1001),
        ),
        ("benchmark", "threads", 0, lambda: _request("benchmark", "BenchmarkRequest", ["m.pt"], threads=0)),
        ("ptq-calibrate", "num_images", 0, lambda: _request("ptq", "PtqRequest", "m.pt", "d", num_images=0)),
        ("ptq-calibrate", "val_images", 0, lambda: _request("ptq", "PtqRequest", "m.pt", "d", val_images=0)),
        (
            "ptq-calibrate",
            "batch_size",
            4097,
            lambda: _request("ptq", "PtqRequest", "m.pt", "d", batch_size=4097),
        ),
    ],
)
def test_the_cli_check_and_the_option_owner_say_the_same(command, name, value, owner):
    assert _cli_message(command, name, value) == _message(owner)


def test_train_batch_size_minus_one_is_autobatch_and_other_negatives_are_refused():
    check_arguments("train", {"batch_size": -1})
    assert _train(batch_size=-1).batch_size == -1
    assert "(or -1 for autobatch)" in _message(lambda: _train(batch_size=-5))
    assert _cli_message("prune", "batch_size", -1) == "--batch-size must be an integer in [1, 65536], got -1"


def test_library_configs_name_the_field_and_share_the_bound():
    from optkit.stages.prune import PruneConfig
    from optkit.stages.prune_structured import StructuredPruneConfig

    unstructured = _message(lambda: PruneConfig(1.0))
    structured = _message(lambda: StructuredPruneConfig(amount=1.0))
    assert unstructured == structured == "amount must be in [0, 1), got 1.0"  # no flag in the library


def test_fuse_config_checks_its_output_check_settings():
    from optkit.stages.fuse import FuseConfig

    assert _message(lambda: FuseConfig(atol=0.0)) == "atol must be > 0, got 0.0"
    assert _message(lambda: FuseConfig(imgsz=0)) == "imgsz must be an integer >= 1, got 0"
    FuseConfig(atol=0.0, check=False)  # not checked: the tolerance is not used


def test_every_cli_bound_is_a_named_limit():
    named = {id(v) for v in vars(limits).values() if isinstance(v, Bounds)}
    bounds = list(LIMITS.values()) + list(COMMAND_LIMITS.values())
    assert all(id(b) in named for b in bounds)
