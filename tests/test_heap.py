"""optkit.heap.keep_freed_memory: freed memory stays in the process, so allocating it again costs no page
faults (checked in fresh processes: one with glibc's defaults, one with the setting)."""

import platform
import subprocess
import sys

import pytest

from optkit.heap import keep_freed_memory

ALLOCATE_AND_FREE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from optkit.heap import keep_freed_memory
    assert keep_freed_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(1 << 20) for _ in range(20)]  # 20 blocks of 8 MiB, every page written
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""
GLIBC = platform.libc_ver()[0] == "glibc"


def _faults(mode: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATE_AND_FREE, mode], capture_output=True, text=True, check=True
    )
    return [int(n) for n in out.stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    fresh = default[0]  # faults of the first round, whose 160 MiB all come fresh from the kernel
    assert fresh > 1000 and kept[0] > fresh // 2  # (the kernel may map several pages per fault)
    assert min(default[1:]) > fresh // 2  # glibc gave the blocks back, so they fault in again
    assert max(kept[1:]) < fresh // 100  # kept: the second round onwards reuses them


def test_keep_freed_memory_says_whether_glibc_took_it():
    assert keep_freed_memory() is GLIBC
