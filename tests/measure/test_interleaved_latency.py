"""Interleaved timing (optkit.measure.latency): rounds rotate, every model is timed once per round, and
speed-ups are medians of paired per-round ratios with their spread. Fake timers, no clock involved."""

from __future__ import annotations

import pytest
import torch

from optkit.measure.latency import speedup_stats, time_interleaved, torch_batch_timer


def _fake_timers(names, log, schedule=None):
    """Timers that log (name, warm-up runs, timed runs) and return schedule[name][k] ms for their k-th
    timed batch (1.0 ms when no schedule)."""
    calls = {name: 0 for name in names}

    def timer_for(name):
        def timer(warmup, runs):
            log.append((name, warmup, runs))
            if not runs:
                return []
            ms = schedule[name][calls[name]] if schedule else 1.0
            calls[name] += 1
            return [ms] * runs

        return timer

    return [timer_for(name) for name in names]


def test_rounds_rotate_and_time_each_model_once_per_round():
    log = []
    times = time_interleaved(_fake_timers("abc", log), rounds=4, runs=3, warmup=5, round_warmup=2)
    assert log[:3] == [("a", 5, 0), ("b", 5, 0), ("c", 5, 0)]  # one warm-up each, before any round
    rounds = [[name for name, *_ in log[3 + 3 * r : 6 + 3 * r]] for r in range(4)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]  # order rotated by one per round
    assert all(call[1:] == (2, 3) for call in log[3:]) and len(log) == 3 + 4 * 3
    assert [len(t) for t in times] == [4, 4, 4] and all(len(r) == 3 for t in times for r in t)


def test_round_warmup_never_exceeds_warmup():
    log = []
    time_interleaved(_fake_timers("ab", log), rounds=2, runs=1, warmup=0, round_warmup=2)
    assert all(warmup == 0 for _, warmup, _ in log)


def test_speedup_is_median_of_paired_per_round_ratios():
    """Load in rounds 3-5 slows both models: paired ratios see through it, a ratio of medians would not."""
    base = [10.0, 10.0, 40.0, 40.0, 40.0]
    item = [5.0, 6.0, 20.0, 38.0, 44.0]
    s = speedup_stats(base, item)
    ratios = [b / i for b, i in zip(base, item, strict=True)]
    assert s["round_speedups"] == pytest.approx(ratios)
    assert s["speedup"] == pytest.approx(10 / 6)  # the median of the five ratios
    assert s["speedup"] != pytest.approx(40 / 20)  # not median(base) / median(item)
    assert s["speedup_min"] == pytest.approx(40 / 44) and s["speedup_max"] == pytest.approx(2.0)
    assert s["speedup_q1"] == pytest.approx(40 / 38) and s["speedup_q3"] == pytest.approx(2.0)
    assert s["speedup_spread"] == pytest.approx((2.0 - 40 / 38) / (10 / 6))


def test_steady_ratios_have_no_spread_and_one_round_has_none():
    assert speedup_stats([10.0, 20.0, 15.0], [5.0, 10.0, 7.5])["speedup_spread"] == pytest.approx(0.0)
    one = speedup_stats([10.0], [5.0])
    assert one["speedup"] == pytest.approx(2.0) and one["speedup_spread"] is None


def test_torch_batch_timer_restores_threads_and_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).train()
    seen = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append((tuple(args[0].shape), torch.get_num_threads()))
    )
    before = torch.get_num_threads()
    times = torch_batch_timer(model, 32, batch=2, threads=1)(1, 3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert seen == [((2, 3, 32, 32), 1)] * 4  # 1 untimed + 3 timed, at the given shape and threads
    assert torch.get_num_threads() == before and model.training
