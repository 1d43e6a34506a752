"""CPU threading: `--threads` on the data-loop commands, and the OpenMP wait policy chosen before torch
starts (optkit.threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from optkit.threads import prepare_cpu_threading


@pytest.mark.parametrize("command", ["train", "val", "prune", "ptq-calibrate", "qat"])
def test_data_loop_commands_let_waiting_threads_sleep_sooner(command):
    environ: dict[str, str] = {}
    prepare_cpu_threading(command, environ)
    assert environ == {"GOMP_SPINCOUNT": "3000"}


@pytest.mark.parametrize("command", ["profile", "benchmark", "export", None])
def test_timing_commands_keep_torch_threading(command):
    environ: dict[str, str] = {}
    prepare_cpu_threading(command, environ)
    assert environ == {}


@pytest.mark.parametrize("users", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}])
def test_a_policy_the_user_set_is_kept(users):
    environ = dict(users)
    prepare_cpu_threading("train", environ)
    assert environ == users


@pytest.mark.slow
def test_threads_option_sets_torch_threads_in_a_real_process(tmp_path, tiny_data):
    """`optkit train --threads 1` and `optkit val --threads 1`, each a fresh process, report 1 thread;
    without the option torch's default (one per core) is used."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    quick = ["--model", "test-tiny", "--epochs", "1", "--imgsz", "32", "--batch-size", "16", "--workers", "0"]

    def optkit(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "optkit", *args, "--json"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
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
    assert default == int(torch_default)
