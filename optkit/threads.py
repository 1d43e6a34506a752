"""CPU threads for torch: how many run, and how long they spin while they wait.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the pip wheels), one thread per core. Between
parallel regions its threads spin, waiting for the next one: 300,000 spins by default before they sleep.
On a machine where another process needs a core, the spinning threads take turns with it and the whole pool
waits for the slowest. Measured on this project's 2-core VM (`benchmarks/train.py --contention`: yolo-cls-n,
64 px, one epoch on 2,000 images, images/s idle / beside one busy single-threaded process):

    libgomp default (300k spins)   632-652 / 73-79
    GOMP_SPINCOUNT=30000           644 / 127
    GOMP_SPINCOUNT=3000            584-594 / 251-255     <- optkit's default
    GOMP_SPINCOUNT=1000            467 / 291
    OMP_WAIT_POLICY=PASSIVE        413-419 / 305-315
    --threads 1                    433-456 / 435-441

3,000 spins keep 91-92% of the idle speed (the bound chosen: at most 10% lost) and make the busy case 3.3x
faster; sleeping sooner costs idle speed fast. Where other work will share the cores all along,
`--threads 1` is the steady choice (about the same speed idle and busy).

`prepare_cpu_threading` runs in the CLI entry point before torch is imported (libgomp reads the variable
once, when it starts) and applies to the commands that run long loops over data. It never overrides a
policy the user set. `set_cpu_threads` applies a `--threads` option.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Commands whose work is long loops of torch kernels over a dataset. profile and benchmark time single
# passes and keep torch's own setting, so their figures stay comparable with earlier runs and other tools.
DATA_LOOP_COMMANDS = frozenset({"train", "val", "prune", "ptq-calibrate", "qat"})
SPIN_COUNT = "3000"  # spins before a waiting OpenMP thread sleeps (libgomp's default: 300000); see above


def prepare_cpu_threading(command: str | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Before torch is imported: OpenMP threads of a data-loop command spin SPIN_COUNT times before they
    sleep, unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment).
    DataLoader workers and torchrun processes inherit the environment, so they wait the same way."""
    if command not in DATA_LOOP_COMMANDS:
        return
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def set_cpu_threads(threads: int | None) -> int:
    """Intra-op threads for torch on the CPU (`--threads`; None keeps torch's default, one per core).
    Returns the number in use."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
