"""The `optkit train` flow (docs/architecture.md, "Flows"): a TrainConfig in, the trainer's result out.

Under torchrun every process runs this flow; rank 0 checks the run folder, shows progress and returns
the result, and the other ranks train quietly: their option errors are rank 0's too (reported once, there),
and an error of their own (a file missing on their node, a bug) names the rank.
"""

from __future__ import annotations

from dataclasses import fields

from optkit.errors import ConfigError, Interrupted, OptkitError, QuietExit
from optkit.limits import options_named
from optkit.train.config import TrainConfig

# TrainConfig's fields -> the flags that set them (optkit.cli.train; qat's are the same): the trainer and
# its config name fields in their errors, and the train and qat flows word them (options_named)
FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in fields(TrainConfig)} | {
    "resume_from": "--resume",
    "model_options": "--act, --dropout and --model-opt",
    "nproc_per_node": "--nproc_per_node",  # torchrun's
}


def run_train(cfg, progress=None, dist=None):
    """Train as `cfg` says; the TrainResult on rank 0, None on the other torchrun ranks."""
    from optkit.train import distributed
    from optkit.train.trainer import Trainer
    from optkit.workflows.outputs import check_run_folder

    dist = dist or distributed.from_env()
    if not dist.is_main:
        _run_quietly(Trainer(cfg, dist=dist), cfg, dist)
        return None
    with options_named(FLAGS):
        if cfg.resume_from is None:
            cfg.validate()  # before any data is generated or memory allocated
        check_run_folder(cfg.project, cfg.resume_from)  # before any work: the run folder can be written
        return _run(Trainer(cfg, progress=progress, dist=dist), dist)


def _run(trainer, dist):
    """trainer.run(); under torchrun, losing the connection to a process that failed (and printed its
    own error) becomes one line on rank 0."""
    from optkit.train import distributed
    from optkit.workflows.inputs import bad_labels_flag, optkit_checkpoints_only

    try:
        # --weights/--resume: a pickled file's refusal in words; bad label rows: the flag that drops them
        with optkit_checkpoints_only("train"), bad_labels_flag():
            return trainer.run()
    except RuntimeError as e:
        if dist.enabled and distributed.peer_failed(e):
            raise OptkitError("another torchrun process failed; its error is above") from e
        raise


def _run_quietly(trainer, cfg, dist) -> None:
    """A torchrun rank other than 0: no progress, no summary."""
    try:
        with options_named(FLAGS):
            if cfg.resume_from is None:
                cfg.validate()
            _run(trainer, dist)
    except ConfigError:
        raise QuietExit(1) from None
    except Interrupted as e:  # rank 0 says what last.pt holds; this rank knows nothing of the saves
        raise QuietExit(e.exit_code) from None
    except OptkitError as e:
        if isinstance(e.__cause__, RuntimeError):  # the connection to a failed process
            raise QuietExit(1) from None
        raise _on_rank(e, dist.rank) from e


def _on_rank(error: OptkitError, rank: int) -> OptkitError:
    """The same error (its type and facts) with the rank in front of its message."""
    ranked = type(error).__new__(type(error))
    ranked.__dict__.update(error.__dict__)
    ranked.args = (f"rank {rank}: {error}",)
    return ranked


def model_options(act: str | None, dropout: float | None, pairs: list[str]) -> dict:
    """--act, --dropout and --model-opt KEY=VALUE as the zoo model's options."""
    options: dict = {}
    if act is not None:
        options["act"] = act
    if dropout is not None:
        options["dropout"] = dropout
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-opt expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = _parse_value(value.strip())
    return options


def _parse_value(text: str):
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
