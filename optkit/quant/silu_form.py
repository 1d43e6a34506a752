"""Which int8 form of SiLU ONNX Runtime runs faster on this machine, chosen by timing both.

ONNX Runtime has no int8 SiLU. Two forms of x * sigmoid(x) run between Q/DQ:
- `quickgelu`: one float `com.microsoft` QuickGelu(alpha=1) between DequantizeLinear and QuantizeLinear
  (three passes over float data; rounds once); a 1x1 conv feeding it is an int8 GEMM writing float, which
  drops the DequantizeLinear (optkit.quant.qdq.float_output_gemms);
- `qlinear`: QLinearSigmoid (a 256-entry table) and QLinearMul, both on uint8 data.
Which is faster depends on the CPU and on what else it is doing. Measured here, yolo-cls-s at 224 px,
2 threads, speed-up over fp32 (fresh sessions, alternating rounds): in the VM's fast phases quickgelu
1.88-1.97x vs qlinear 1.47-1.55x; in its slow phases (fp32 ~25% slower) quickgelu 1.55x (2.72 ms) vs
qlinear 1.74x (2.44 ms), the float ops suffering most (both before the int8 GEMMs, which made the quickgelu
form ~7% faster: 1.90 -> 1.76 ms side by side). So `auto` times both graphs on the machine that exports
(fresh sessions, alternating rounds, the median) and keeps the faster; `quickgelu` and `qlinear` fix the form
for reproducible files.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

FORMS = ("auto", "quickgelu", "qlinear")
ROUNDS = 5  # alternating rounds per form
RUNS = 20  # timed runs per form and round (after WARMUP)
WARMUP = 5


def check_form(form: str) -> str:
    from optkit.errors import ConfigError

    if form not in FORMS:
        raise ConfigError(f"--silu-form must be one of {', '.join(FORMS)}, got {form!r}")
    return form


def time_graphs(graphs: dict[str, bytes]) -> dict[str, float]:
    """{name: median ms of one batch} for serialized ONNX graphs, timed in alternating rounds, each round
    in a fresh session (sessions alive side by side disturb each other's threads on small machines)."""
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(ROUNDS):
        for name, graph in graphs.items():
            times[name].append(_median_run_ms(graph))
    return {name: statistics.median(t) for name, t in times.items()}


def _median_run_ms(graph: bytes) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    feed = {i.name: _example(i) for i in session.get_inputs()}
    for _ in range(WARMUP):
        session.run(None, feed)
    runs = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        session.run(None, feed)
        runs.append((time.perf_counter() - t0) * 1e3)  # s to ms
    return float(np.median(runs))


def _example(arg):
    """Random input for a graph input: dynamic dims (names) become 1."""
    import numpy as np

    shape = [d if isinstance(d, int) else 1 for d in arg.shape]
    dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def choose(build: Callable[[bool], tuple], form: str):
    """(graph, report) of `build(silu_unit)` for the form asked; `auto` builds and times both and keeps
    the faster. The report gets silu_form, silu_count and, for auto, silu_timing_ms."""
    unit = build(True)
    count = unit[1].silu_units
    if count == 0:
        return unit
    if form == "auto":
        split = build(False)
        timing = time_graphs(
            {"quickgelu": unit[0].SerializeToString(), "qlinear": split[0].SerializeToString()}
        )
        chosen = min(timing, key=timing.get)
    else:
        chosen, timing = form, {}
        split = build(False) if form == "qlinear" else None
    graph, report = unit if chosen == "quickgelu" else split
    report.silu_form, report.silu_count, report.silu_timing_ms = chosen, count, timing
    return graph, report
