"""CPU threads for torch: how many run, and how they wait.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the pip wheels), one thread per core. Between
parallel regions its threads spin, waiting for the next one. On a machine where another process needs a
core, the spinning threads take turns with it and the whole pool waits for the slowest: on this project's
2-core VM, training yolo-cls-n fell from ~450 to 118-133 img/s beside one busy single-threaded process
(issue 13's figures). Threads that sleep when they wait (OMP_WAIT_POLICY=PASSIVE) give the core back.

`prepare_cpu_threading` runs in the CLI entry point before torch is imported (libgomp reads the variable
once, when it starts) and applies to the commands that run long loops over data, where the effect was
measured (`benchmarks/train.py --contention`, figures in the README). It never overrides a value the user
set. `set_cpu_threads` applies a `--threads` option.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Commands whose work is long loops of torch kernels over a dataset. profile and benchmark time single
# passes and keep torch's own setting, so their figures stay comparable with earlier runs and other tools.
DATA_LOOP_COMMANDS = frozenset({"train", "val", "prune", "ptq-calibrate", "qat"})
WAIT_POLICY = "PASSIVE"  # see the module docstring


def prepare_cpu_threading(command: str | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Before torch is imported: OpenMP threads of a data-loop command sleep instead of spinning when
    they wait, unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment).
    DataLoader workers and torchrun processes inherit the environment, so they wait the same way."""
    if command not in DATA_LOOP_COMMANDS:
        return
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY


def set_cpu_threads(threads: int | None) -> int:
    """Intra-op threads for torch on the CPU (`--threads`; None keeps torch's default, one per core).
    Returns the number in use."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
