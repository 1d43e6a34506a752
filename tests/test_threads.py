"""CPU threading: `--threads` on the data-loop commands, and the OpenMP wait policy chosen before torch
starts (optkit.threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from optkit.threads import (
    BUSY_ENV,
    CONTENDED_SPIN_COUNT,
    IDLE_SPIN_COUNT,
    contention_note,
    others_busy_cores,
    prepare_cpu_threading,
    threads_beside_others,
)


def idle():
    return 0.0


def one_core_busy():
    return 1.02


@pytest.mark.parametrize("command", ["train", "val", "prune", "ptq-calibrate", "qat"])
def test_data_loop_commands_on_an_idle_machine_spin_as_long_as_fast(command):
    environ: dict[str, str] = {}
    prepare_cpu_threading(command, environ, others_busy=idle)
    assert environ == {"GOMP_SPINCOUNT": IDLE_SPIN_COUNT}


def test_a_busy_core_at_start_means_shorter_spins_and_a_thread_fewer():
    environ: dict[str, str] = {}
    prepare_cpu_threading("train", environ, others_busy=one_core_busy)
    assert environ == {"GOMP_SPINCOUNT": CONTENDED_SPIN_COUNT, BUSY_ENV: "1.02"}
    cores = len(os.sched_getaffinity(0))
    expected = max(1, cores - 1)
    assert threads_beside_others(cores, environ) == (expected if expected < cores else None)
    if expected < cores:
        assert f"using {expected} of {cores} CPU threads" in contention_note(expected, environ)
    assert threads_beside_others(cores, {}) is None and contention_note(1, {}) is None


def test_others_busy_cores_sees_a_busy_process():
    """A real single-threaded busy loop beside the sample reads as about one core (0.5 at least: the
    machine may give it less than a whole core)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)  # past its start-up
        assert others_busy_cores(0.3) >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("command", ["profile", "benchmark", "export", None])
def test_timing_commands_keep_torch_threading(command):
    environ: dict[str, str] = {}
    prepare_cpu_threading(command, environ, others_busy=one_core_busy)
    assert environ == {}


@pytest.mark.parametrize("users", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}])
def test_a_policy_the_user_set_is_kept(users):
    environ = dict(users)
    prepare_cpu_threading("train", environ, others_busy=idle)
    assert environ == users


@pytest.mark.parametrize("users", [{"OMP_NUM_THREADS": "2"}, {"WORLD_SIZE": "2"}])
def test_a_thread_count_set_by_the_user_or_torchrun_is_kept(users):
    environ = dict(users)
    prepare_cpu_threading("train", environ, others_busy=one_core_busy)
    assert environ == {**users, "GOMP_SPINCOUNT": CONTENDED_SPIN_COUNT}


@pytest.mark.slow
def test_threads_option_sets_torch_threads_in_a_real_process(tmp_path, tiny_data):
    """`optkit train --threads 1` and `optkit val --threads 1`, each a fresh process, report 1 thread;
    without the option torch's default (one per core) is used, or one per core that other processes left
    free at start, which the command says on stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", BUSY_ENV)}
    quick = ["--model", "test-tiny", "--epochs", "1", "--imgsz", "32", "--batch-size", "16", "--workers", "0"]
    stderr = ""  # of the last command

    def optkit(*args: str) -> dict:
        nonlocal stderr
        done = subprocess.run(
            [sys.executable, "-m", "optkit", *args, "--json"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        stderr = done.stderr
        return json.loads(done.stdout)

    trained = optkit("train", "--data", str(tiny_data), *quick, "--threads", "1")
    assert trained["threads"] == 1
    best = str(tmp_path / trained["best"])
    assert optkit("val", best, "--data", str(tiny_data), "--workers", "0", "--threads", "1")["threads"] == 1
    default = optkit("val", best, "--data", str(tiny_data), "--workers", "0")["threads"]
    torch_default = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "CPU threads: other processes" in stderr:  # the other test workers kept a core busy at start
        assert default < int(torch_default)
    else:
        assert default == int(torch_default)
