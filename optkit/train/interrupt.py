"""Ctrl-C that is never lost during training.

Python turns SIGINT into a KeyboardInterrupt at the next bytecode of the main thread. When that bytecode
belongs to a __del__ method or a garbage-collector callback (torch.save's zip writer and tensors run
some), Python prints "Exception ignored in ..." with a traceback and carries on: the run would go on
to its last epoch and exit 0 (seen once in CI, under load, with SIGINT arriving inside a checkpoint write).
`latch()` remembers every SIGINT, keeps such swallowed interrupts quiet, and `check()` raises them again at
the trainer's next batch.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Latch:
    def __init__(self) -> None:
        self.pressed = False  # a SIGINT arrived

    def check(self) -> None:
        """Raise the remembered interrupt (a no-op when none came, or when it is being raised already)."""
        if self.pressed:
            raise KeyboardInterrupt


@contextmanager
def latch() -> Iterator[Latch]:
    """SIGINT raises KeyboardInterrupt as Python's default handler does, and is remembered in the
    yielded Latch. Outside the main thread (signals cannot be handled there) the latch stays unset."""
    state = Latch()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_sigint(signum, frame):
        state.pressed = True
        raise KeyboardInterrupt

    def unraisable(args) -> None:  # a swallowed Ctrl-C: check() raises it again, say nothing now
        if not (state.pressed and isinstance(args.exc_value, KeyboardInterrupt)):
            previous_hook(args)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
