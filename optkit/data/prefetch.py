"""Batches loaded by a thread one step ahead of the training step that uses them.

With no loader processes (optkit.data.loader.default_workers: none on 2 cores, where they would fight
torch's threads for the cores), the DataLoader decodes and augments each batch in the training process
between two steps, while torch's threads wait. A thread that builds batch i + 1 during step i puts that
work in the gaps the step leaves: the augmentation is numpy and Pillow, which release the GIL in their
array and image loops, and a step has phases that use one core or none (autograd's Python, the
optimizer's small tensors). Items come in the loader's order, and every augmentation draws from a
generator seeded by the item's own (seed, epoch, index) key, so a run is the same with or without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

DEPTH = 2  # batches held ready: one being used, one more; deeper only holds memory


class _Failed:
    """The loader raised: carried to the consumer, which raises it there."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetched(loader: Iterable, depth: int = DEPTH) -> Iterator[Any]:
    """Iterate `loader` with its next items built by a daemon thread. The iterator is created here, in
    the caller's thread (a DataLoader draws its base seed from torch's global generator when it starts),
    so the global random state moves as a plain loop would move it. Closing the generator (a `break`,
    an exception in the loop) stops the thread after the item it is building."""
    source = iter(loader)
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            ready.put(_Failed(e))

    thread = threading.Thread(target=fill, name="optkit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() see the stop: empty the queue
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
