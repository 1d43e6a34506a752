"""Ctrl-C during training is never lost: optkit.train.interrupt.latch (the CLI run: test_interrupt.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from optkit.train import interrupt

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals are handled in the main thread"
)


class _InterruptedWhileDeleted:
    """Ctrl-C arriving while Python runs this object's __del__: Python prints and ignores the
    KeyboardInterrupt raised there (as it can inside torch.save's writers)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # bytecodes: Python runs the SIGINT handler in one of them
            pass


def test_a_ctrl_c_python_swallows_is_raised_at_the_next_check(monkeypatch):
    ignored = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda args: ignored.append(args.exc_type))
    with interrupt.latch() as ctrl_c:
        _InterruptedWhileDeleted()  # deleted at once
        assert ctrl_c.pressed
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
    assert ignored == []  # kept quiet: check() raised it instead


def test_ctrl_c_raises_at_once_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt.latch() as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):
            pass
    assert ctrl_c.pressed and signal.getsignal(signal.SIGINT) is before
    quiet = interrupt.Latch()
    quiet.check()  # nothing pressed: no-op


def test_without_the_latch_python_swallows_it(monkeypatch):
    """Why the latch exists: with Python's own handler this Ctrl-C only gets printed, and the code goes on."""
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: ignored.append(args.exc_type))
    _InterruptedWhileDeleted()
    assert ignored == [KeyboardInterrupt]


class _CutShortDataLoaderIter:
    """Stands in for torch's DataLoader iterator whose __init__ a Ctrl-C ended early: its __del__ reads
    state that was never set (AttributeError), as torch's _MultiProcessingDataLoaderIter does."""

    def __del__(self):
        self._workers_status  # noqa: B018 - never set


def test_a_cut_short_loader_is_freed_quietly_and_other_errors_still_print(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with interrupt.quiet_cut_short_loaders():
        _CutShortDataLoaderIter()  # freed at once: its __del__ raises AttributeError
        assert seen == []

        class Other:
            def __del__(self):
                raise ValueError("a real destructor bug")

        Other()
        assert [type(a.exc_value) for a in seen] == [ValueError]  # passed on to the previous hook
    assert sys.unraisablehook == seen.append  # restored
    _CutShortDataLoaderIter()  # outside: printed as before
    assert [type(a.exc_value) for a in seen] == [ValueError, AttributeError]
