"""ONNX Runtime latency of several files measured side by side (shared by the benchmark scripts)."""

from __future__ import annotations

import statistics
import time


def alternating_timings(files: dict, imgsz: int, threads: int, rounds: int, runs: int, warmup: int) -> dict:
    """{name: per-round median ms} at batch 1: the files alternate within every round, so all see the same
    machine load; compare them by per-round ratios."""
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, imgsz, imgsz)).astype(np.float32)
    sessions = {}
    for name, path in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x}
        for _ in range(warmup):
            s.run(None, feed)
        sessions[name] = (s, feed)
    per_round: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(rounds):
        for name, (s, feed) in sessions.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                times.append((time.perf_counter() - t0) * 1e3)  # s to ms
            per_round[name].append(statistics.median(times))
    return per_round
