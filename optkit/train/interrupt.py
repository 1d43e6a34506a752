"""Ctrl-C that is never lost during training.

Python turns SIGINT into a KeyboardInterrupt at the next bytecode of the main thread. When that bytecode
belongs to a __del__ method or a garbage-collector callback (torch.save's zip writer and tensors run
some), Python prints "Exception ignored in ..." with a traceback and carries on: the run would go on
to its last epoch and exit 0 (seen once in CI, under load, with SIGINT arriving inside a checkpoint write).
`latch()` remembers every SIGINT (and SIGTERM), keeps such swallowed interrupts quiet, and `check()` raises
them again at the trainer's next batch.

SIGTERM (`kill`, `timeout`, `docker stop`) takes the same path in every command: `sigterm_raises()`, which
the CLI entry installs, turns it into `Terminated`, a KeyboardInterrupt that exits with 143.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from optkit.errors import Terminated


class Latch:
    def __init__(self) -> None:
        self.pressed: type[KeyboardInterrupt] | None = None  # what arrived: KeyboardInterrupt or Terminated

    def check(self) -> None:
        """Raise the remembered interrupt (a no-op when none came, or when it is being raised already)."""
        if self.pressed:
            raise self.pressed


def raise_terminated(signum, frame) -> None:
    """SIGTERM handler: raise Terminated in the main thread, as SIGINT raises KeyboardInterrupt.

    A SIGTERM sent to the whole process group (`timeout`, systemd) also ends the DataLoader workers (torch
    lets them die of it), and torch's SIGCHLD handler would then raise "DataLoader worker ... is killed by
    signal" in the middle of this process's cleanup. From here on children ending is expected: SIGCHLD
    gets a Python handler that does nothing. Not SIG_DFL: a SIGCHLD that arrived before this line but is
    handled after it would make CPython raise "OSError: Signal 17 ignored due to race condition" in
    whatever runs next (seen inside the DataLoader's worker shutdown)."""
    with contextlib.suppress(AttributeError, ValueError):  # no SIGCHLD on Windows
        signal.signal(signal.SIGCHLD, _children_may_end)
    raise Terminated


def _children_may_end(signum, frame) -> None:
    """SIGCHLD after a SIGTERM: a child ending is expected, nothing to do."""


class Sigterm:
    def __init__(self) -> None:
        self.received = False  # a SIGTERM arrived (what the CLI reports when Typer swallowed the exception)


@contextmanager
def sigterm_raises() -> Iterator[Sigterm]:
    """SIGTERM raises Terminated while the body runs, and is remembered in the yielded Sigterm; the
    previous handler comes back afterwards. Outside the main thread (signals cannot be handled there)
    nothing changes."""
    state = Sigterm()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_sigterm(signum, frame):
        state.received = True
        raise_terminated(signum, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def latch() -> Iterator[Latch]:
    """SIGINT raises KeyboardInterrupt as Python's default handler does, SIGTERM raises Terminated, and
    either is remembered in the yielded Latch. Outside the main thread (signals cannot be handled there)
    the latch stays unset."""
    state = Latch()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_sigint(signum, frame):
        state.pressed = KeyboardInterrupt
        raise KeyboardInterrupt

    def on_sigterm(signum, frame):
        state.pressed = Terminated
        if callable(previous_sigterm):  # the CLI's (sigterm_raises): it records the SIGTERM and raises
            previous_sigterm(signum, frame)
        raise_terminated(signum, frame)

    def unraisable(args) -> None:  # a swallowed interrupt: check() raises it again, say nothing now
        if not (state.pressed and isinstance(args.exc_value, KeyboardInterrupt)):
            previous_hook(args)

    previous_sigint = signal.signal(signal.SIGINT, on_sigint)
    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous_sigterm)
        sys.unraisablehook = previous_hook


@contextmanager
def quiet_cut_short_loaders() -> Iterator[None]:
    """While the body runs, a DataLoader iterator whose construction an interrupt cut short says nothing
    when it is freed. Ctrl-C while the iterator starts its workers ends its __init__ before it records
    them, and torch's __del__ then raises AttributeError, which Python prints as "Exception ignored in
    ... Traceback" under the one-line interrupt message (seen once in CI: Ctrl-C as the val loader
    started). Other unraisable errors are printed as before."""
    previous = sys.unraisablehook

    def hook(args) -> None:
        if not _cut_short_loader(args):
            previous(args)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _cut_short_loader(args) -> bool:
    """A DataLoader iterator's __del__ failing on state its interrupted __init__ never set."""
    where = getattr(args.object, "__qualname__", "")
    return isinstance(args.exc_value, AttributeError) and where.endswith("DataLoaderIter.__del__")
