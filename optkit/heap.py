"""glibc's malloc in the data-loop commands: freed memory stays in the process for the next batch.

A training step allocates and frees the same activations every batch. By default glibc hands large freed
blocks back to the kernel (blocks of 128 KiB and more are mmap'ed, a threshold it raises as they are freed,
and a heap whose free top passes twice that threshold is trimmed), so the next batch faults the same
memory in again, page by page: a minor fault per 4 KiB page, zeroed by the kernel. Measured on this
project's 2-core VM (yolo-det-n, 96 px, batch 32, the trainer in lockstep with bare loops, page faults
from getrusage): the trainer's forward, loss and backward took 1,000-2,200 faults per batch, a loop fed
by the same DataLoader 1,000-1,600 (the loader's own allocations in between push the heap top around);
with keep_freed_memory, about 220 and 50-60 (the same rounds' images/s moved within the VM's noise).
jemalloc and tcmalloc, which people LD_PRELOAD for CPU training, avoid the faults by keeping freed
memory too; this needs no new library.

keep_freed_memory() fixes the mmap threshold at 32 MiB (glibc's largest on 64-bit; a fixed value also
stops its adjustments) and the trim threshold at 1 GiB. The process then keeps its peak heap until it
exits, as a training process does anyway. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # bytes: blocks this large or larger are still mmap'ed (glibc's ceiling)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top that glibc keeps before giving memory back


def keep_freed_memory() -> bool:
    """Keep freed heap memory in this process (and the loader workers it forks); True where glibc took
    both settings, False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (not glibc)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
