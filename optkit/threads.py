"""CPU threads for torch: how many run, and how long they spin while they wait.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the pip wheels), one thread per core. Between
parallel regions its threads spin, waiting for the next one: 300,000 spins by default before they sleep.
On a machine where another process needs a core, the spinning threads take turns with it and the whole pool
waits for the slowest. Measured on this project's 2-core VM (`benchmarks/train.py --contention`: yolo-cls-n,
64 px, one epoch on 2,000 images, images/s idle / beside one busy single-threaded process):

    libgomp default (300k spins)   632-652 / 73-79
    GOMP_SPINCOUNT=30000           644 / 127            <- optkit on a machine idle at start

and with the choice made at start (session 8, `--contention --contention-rounds 2`): optkit's default
517 / 389 img/s (busy 0.75x of idle, idle 0.94x of libgomp's default 551 / 157).
    GOMP_SPINCOUNT=3000            584-594 / 251-255
    GOMP_SPINCOUNT=1000            467 / 291
    OMP_WAIT_POLICY=PASSIVE        413-419 / 305-315
    --threads 1                    433-456 / 435-441

Spinning less helps a busy machine and costs idle speed (3,000 spins: 91-92% of it); one thread per free
core is the steady choice where other work shares the cores (--threads 1 here: as fast idle as busy).

Other processes that keep cores busy when a command starts are measured (CPU time over CONTENTION_SAMPLE_S,
from /proc/stat): with at least BUSY_CORE of a core taken, torch gets one thread fewer per core taken and its
threads spin CONTENDED_SPIN_COUNT times; on an idle machine all cores, spinning IDLE_SPIN_COUNT times, which
is as fast idle as libgomp's default and recovers sooner when contention starts later. A thread count
changes the order of float sums, so runs with different counts are not bit-identical: the commands say when
they take fewer threads, and `--threads N` (or OMP_NUM_THREADS) fixes the count.

`prepare_cpu_threading` runs in the CLI entry point before torch is imported (libgomp reads the variable
once, when it starts) and applies to the commands that run long loops over data. It never overrides a
policy or a thread count the user set, and torchrun ranks (WORLD_SIZE set) keep torchrun's threads.
`set_cpu_threads` applies a `--threads` option, or the measured default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping

# Commands whose work is long loops of torch kernels over a dataset. profile and benchmark time single
# passes and keep torch's own setting, so their figures stay comparable with earlier runs and other tools.
DATA_LOOP_COMMANDS = frozenset({"train", "val", "prune", "ptq-calibrate", "qat"})
CONTENDED_SPIN_COUNT = "3000"  # spins before a waiting OpenMP thread sleeps (libgomp's default: 300000)
IDLE_SPIN_COUNT = "30000"  # as fast as the default on an idle machine (table above)
CONTENTION_SAMPLE_S = 0.2  # seconds of /proc/stat sampled at start (shorter ones caught passing bursts)
BUSY_CORE = 0.75  # cores of other processes' CPU use from which one core counts as taken (a busy loop: 1.0)
BUSY_ENV = "OPTKIT_OTHERS_BUSY_CORES"  # prepare_cpu_threading -> set_cpu_threads, in this process


def prepare_cpu_threading(
    command: str | None,
    environ: MutableMapping[str, str] = os.environ,
    others_busy: Callable[[], float | None] | None = None,
) -> None:
    """Before torch is imported: for a data-loop command, measure other processes' CPU use
    (`others_busy`, cores; default: others_busy_cores) and set the OpenMP spin count for it, recording
    the cores taken in BUSY_ENV for set_cpu_threads. A wait policy the user set is kept; with
    OMP_NUM_THREADS set (or under torchrun) nothing is measured."""
    if command not in DATA_LOOP_COMMANDS:
        return
    policy_set = "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ
    count_set = "OMP_NUM_THREADS" in environ or "WORLD_SIZE" in environ
    busy = None if policy_set and count_set else (others_busy or others_busy_cores)()
    contended = busy is not None and busy >= BUSY_CORE
    if not policy_set:
        environ["GOMP_SPINCOUNT"] = CONTENDED_SPIN_COUNT if contended else IDLE_SPIN_COUNT
    if contended and not count_set:
        environ[BUSY_ENV] = f"{busy:.2f}"


def others_busy_cores(sample_s: float = CONTENTION_SAMPLE_S) -> float | None:
    """Cores' worth of CPU time that other processes used on this process's CPUs over `sample_s`
    seconds (this process sleeps meanwhile), from /proc/stat; None where there is none (not Linux)."""
    try:
        cpus = _cpus()
        before, mine_before, t0 = _busy_jiffies(cpus), os.times(), time.monotonic()
        time.sleep(sample_s)
        after, mine_after, t1 = _busy_jiffies(cpus), os.times(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    busy = (after - before) / os.sysconf("SC_CLK_TCK")  # CPU seconds, every process
    mine = (mine_after.user + mine_after.system) - (mine_before.user + mine_before.system)
    return max(0.0, busy - mine) / max(t1 - t0, 1e-9)


def _busy_jiffies(cpus: set[int]) -> int:
    """Jiffies the CPUs in `cpus` spent busy since boot (all but idle and iowait), from /proc/stat's
    per-CPU lines (a container's host may have more CPUs than this process may use)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                busy += sum(values) - values[3] - values[4]
    return busy


def _cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def set_cpu_threads(threads: int | None, environ: MutableMapping[str, str] = os.environ) -> int:
    """Intra-op threads for torch on the CPU: `threads` (`--threads`), else one per core not taken by
    other processes when the command started (prepare_cpu_threading), else torch's default (one per
    core). Returns the number in use."""
    import torch

    measured = threads is None
    if measured:
        threads = threads_beside_others(torch.get_num_threads(), environ)
    if threads is not None:
        torch.set_num_threads(threads)
    used = torch.get_num_threads()
    note = contention_note(used, environ) if measured else None
    if note:
        from optkit.report.console import err

        err().print(f"note: {note}")
    return used


def threads_beside_others(default: int, environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Fewer threads than `default` when other processes took cores at start, else None."""
    if BUSY_ENV not in environ:
        return None
    taken = round(float(environ[BUSY_ENV]))
    wanted = max(1, min(default, len(_cpus()) - taken))
    return wanted if wanted < default else None


def contention_note(used: int, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """One line when set_cpu_threads took fewer threads than the cores because of other processes."""
    if BUSY_ENV not in environ:
        return None
    cores = len(_cpus())
    if used >= cores:
        return None
    return (
        f"using {used} of {cores} CPU threads: other processes kept about {float(environ[BUSY_ENV]):.1f} "
        f"core(s) busy at start (--threads {cores} uses every core)"
    )
