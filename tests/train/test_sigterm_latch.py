"""SIGTERM takes Ctrl-C's path: optkit.train.interrupt.sigterm_raises (the CLI entry) and the training
latch raise Terminated, a KeyboardInterrupt with exit code 143 (CLI runs: tests/robust/test_sigterm.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from optkit.errors import Terminated
from optkit.train import interrupt

pytestmark = [
    pytest.mark.skipif(
        threading.current_thread() is not threading.main_thread(),
        reason="signals are handled in the main thread",
    ),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    for _ in range(100_000):  # bytecodes: Python runs the handler in one of them
        pass


class _TerminatedWhileDeleted:
    """SIGTERM arriving while Python runs this object's __del__, where Python prints and drops exceptions."""

    def __del__(self):
        _deliver(signal.SIGTERM)


def test_sigterm_raises_terminated_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught, interrupt.sigterm_raises() as sigterm:
        _deliver(signal.SIGTERM)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.exit_code == 143
    assert sigterm.received and signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_python_swallows_in_training_is_raised_at_the_next_check(monkeypatch):
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: ignored.append(args.exc_type))
    with interrupt.sigterm_raises() as sigterm, interrupt.latch() as latch:
        _TerminatedWhileDeleted()  # deleted at once
        assert latch.pressed is Terminated and sigterm.received  # the CLI's record sees it too
        with pytest.raises(Terminated):
            latch.check()
    assert ignored == []  # kept quiet: check() raised it instead
