"""Shared fixtures: a private cache folder, tiny datasets on disk, and an in-process CLI runner."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from image_folders import write_image_folder  # noqa: F401  (tests import it from here too)


def pytest_configure(config):
    """Under pytest-xdist, one torch thread per worker: workers x threads must not exceed the cores,
    or OpenMP's spinning threads slow every test down many times over on a busy 2-core machine."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"  # for the CLI subprocesses some tests start
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Builtin datasets go to a per-session temp cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "optkit-cache"
    monkeypatch.setenv("OPTKIT_CACHE", str(cache))


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_image_folder(tmp_path / "colors", ["blue", "green", "red"], per_class=24)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run `optkit ARGS...` in-process through the real entry point (exit codes, stdout, stderr)."""
    from optkit.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def two_class_data(tmp_path) -> Path:
    return write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=16, seed=1)


@pytest.fixture
def cli_process(tmp_path):
    """Run `optkit ARGS...` as its own process (as a user does), for commands that load OpenVINO: its
    threads, left in the test process, make a later test that signals itself crash (see the note in
    tests/test_ovrt.py)."""
    import subprocess
    import sys

    def run(*args: str) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "optkit", *[str(a) for a in args]],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )  # fmt: skip
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run
