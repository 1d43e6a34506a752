"""optkit.data.prefetch: the loader's items in its order, its errors raised in the consumer, the thread
stopped when the consumer stops, and torch's global random state moved as a plain loop moves it."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader

from optkit.data.prefetch import prefetched


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "optkit-prefetch"]


def test_items_come_in_the_loaders_order():
    loader = DataLoader(list(range(23)), batch_size=4, shuffle=False)
    assert [b.tolist() for b in prefetched(loader)] == [b.tolist() for b in loader]
    assert not _threads()


def test_the_loaders_error_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("label file broken")

    got = []
    with pytest.raises(ValueError, match="label file broken"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]
    assert not _threads()


def test_a_consumer_that_stops_early_stops_the_thread():
    built = []

    def slow():
        for i in range(1000):
            built.append(i)
            yield i

    batches = prefetched(slow(), depth=2)
    assert next(batches) == 0
    time.sleep(0.2)  # the thread fills the queue and waits
    batches.close()
    assert not _threads()
    assert len(built) <= 5  # one in use, two queued, one being put: never the whole loader


def test_the_global_random_state_moves_as_a_plain_loop_moves_it():
    """A DataLoader draws its base seed from torch's global generator when its iterator starts: in the
    caller's thread, before the first batch, as in a plain loop (a trainer's dropout draws come after)."""
    loader = DataLoader(list(range(8)), batch_size=2, shuffle=True)
    torch.manual_seed(3)
    plain = [b.tolist() for b in loader]
    after_plain = torch.rand(4)
    torch.manual_seed(3)
    ahead = [b.tolist() for b in prefetched(loader)]
    assert ahead == plain and torch.equal(torch.rand(4), after_plain)
