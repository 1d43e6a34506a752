"""Launch real `torchrun` processes (torch.distributed.run, --standalone) for the multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_torchrun(*args, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=nproc <args>` in `cwd`, one thread per process, without
    the rank variables of a torchrun this test run may itself be under."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):  # not inherited from a torchrun
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
