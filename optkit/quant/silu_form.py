"""Which int8 form of SiLU an onnxruntime INT8 export writes: never one that fails the parity check, and
the same one on every run unless the other is clearly faster.

ONNX Runtime has no int8 SiLU. Two forms of x * sigmoid(x) run between Q/DQ:
- `quickgelu`: one float `com.microsoft` QuickGelu(alpha=1) between DequantizeLinear and QuantizeLinear
  (three passes over float data; rounds once); a 1x1 conv feeding it is an int8 GEMM writing float, which
  drops the DequantizeLinear (optkit.quant.qdq.float_output_gemms), and a stem conv feeding it stays float;
- `qlinear`: QLinearSigmoid (a 256-entry table) and QLinearMul, both on uint8 data: it also rounds the
  sigmoid to 1/255 steps and the stem's and 1x1 convs' outputs to uint8.
Which is faster depends on the CPU and on what else it is doing. Measured here, yolo-cls-s at 224 px,
2 threads, speed-up over fp32 (fresh sessions, alternating rounds): in the VM's fast phases quickgelu
1.88-1.97x vs qlinear 1.47-1.55x; in its slow phases (fp32 ~25% slower) quickgelu 1.55x (2.72 ms) vs
qlinear 1.74x (2.44 ms), the float ops suffering most (both before the int8 GEMMs, which made the quickgelu
form ~7% faster: 1.90 -> 1.76 ms side by side). Which is closer to the fake-quant model depends on the
checkpoint: lightly trained yolo-cls-n (64 px, 1-3 epochs) quickgelu 0.001-0.006 of the output scale,
qlinear 0.15-0.52 (0.25 allowed); test-tiny with BatchNorm statistics fitted to its images, seed 2:
quickgelu 0.42, qlinear 0.17.

`auto` (the default) decides in this order:
1. parity, when the export is checked: both graphs are compared with the fake-quant model on the inputs
   the written file is checked on (optkit.stages.export); a form beyond the tolerance is never chosen,
   and when neither passes the export fails naming both figures;
2. speed, only when both pass: ROUNDS paired rounds, each timing both graphs back to back in fresh
   sessions (which goes first alternates), give one ratio quickgelu ms / qlinear ms per round; `qlinear`
   is kept only when the median ratio is above 1 + MARGIN, else `quickgelu` (DEFAULT).
MARGIN = 10%: forms that time alike (0.230 vs 0.237 ms, 3% apart, flipped between identical runs) must
give the same file every run, while the differences that matter were 11% (qlinear, slow phases) to 25%
(quickgelu, fast phases). Ties go to quickgelu: it rounds less, and was the faster in quiet phases.
`quickgelu` and `qlinear` fix the form (byte-identical files); a fixed form that fails the check fails
the export, and the message says whether the other form passes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optkit.limits import FieldError, FieldsError
from optkit.stages.export import ExportError

FORMS = ("auto", "quickgelu", "qlinear")
DEFAULT = "quickgelu"  # ties go here (see the module docstring)
MARGIN = 0.10  # qlinear is kept only when its median paired speed-up over quickgelu is above 1 + MARGIN
ROUNDS = 5  # paired rounds: both forms timed back to back in each
RUNS = 20  # timed runs per form and round (after WARMUP)
WARMUP = 5


@dataclass
class ParityCheck:
    """How `choose` checks a candidate graph against the fake-quant model (built by optkit.stages.export):
    `measure(graph)` returns its parity cases (each with `max_rel`, max |Δ| / max |output|, and `label()`)."""

    measure: Callable[[Any], list]
    atol: float


@dataclass
class Candidate:
    form: str
    graph: Any  # onnx.ModelProto
    report: Any  # optkit.quant.qdq.QdqReport
    cases: list | None = None  # parity cases; None when not checked

    def worst(self) -> float:
        """The largest max |Δ| / output scale over the cases (NaN when any case is NaN)."""
        values = [c.max_rel for c in self.cases or []]
        return max(values, key=lambda v: (math.isnan(v), v)) if values else 0.0

    def passes(self, atol: float) -> bool:
        return self.worst() <= atol  # NaN fails


class SiluFormError(FieldsError, ExportError):
    """No SiLU form passes the parity check, or the one asked for fails it; nothing was written. The message
    names the export's fields (silu_form, atol, int8_target, data: optkit.limits.FieldsError), and the
    export flow names its flags."""

    def __init__(self, template: str, **values: Any):
        super().__init__(template, ("silu_form", "atol", "int8_target", "data"), **values)


def check_form(form: str) -> str:
    if form not in FORMS:
        raise FieldError("silu_form", f"must be one of {', '.join(FORMS)}, got {form!r}")
    return form


def choose(
    build: Callable[[bool], tuple],
    form: str,
    check: ParityCheck | None = None,
    timer: Callable[..., dict[str, list[float]]] | None = None,
    imgsz: int | None = None,
):
    """(graph, report) of `build(silu_unit)` for the form asked (see the module docstring). The report gets
    silu_form, silu_count, silu_reason, and what was measured: silu_parity (form -> worst max |Δ| / output
    scale), silu_timing_ms (form -> median ms) and silu_qlinear_speedup (median paired ratio).
    check: None skips the parity step (an unchecked export). timer: replaces `time_graphs`. imgsz: pixels,
    the side of the square image `auto` times the graphs on where their height and width are dynamic."""
    unit = build(True)
    count = unit[1].silu_units
    if count == 0:
        return unit
    forms = {"quickgelu": Candidate("quickgelu", *unit)}
    if form != "quickgelu":
        forms["qlinear"] = Candidate("qlinear", *build(False))
    if form == "auto":
        chosen = _auto(forms, check, timer or time_graphs, imgsz)
    else:
        chosen = _fixed(forms[form], build, check)
    report = chosen.report
    report.silu_form, report.silu_count = chosen.form, count
    report.silu_parity = {c.form: c.worst() for c in forms.values() if c.cases is not None}
    return chosen.graph, report


def _fixed(candidate: Candidate, build: Callable[[bool], tuple], check: ParityCheck | None) -> Candidate:
    """The form asked for, checked now so that a failure can say whether the other form passes."""
    candidate.report.silu_reason = f"as asked (--silu-form {candidate.form})"
    if check is None:
        return candidate
    candidate.cases = check.measure(candidate.graph)
    if candidate.passes(check.atol):
        return candidate
    other_form = "qlinear" if candidate.form == "quickgelu" else "quickgelu"
    other = Candidate(other_form, *build(other_form == "quickgelu"))
    other.cases = check.measure(other.graph)
    if not other.passes(check.atol):
        raise _all_fail([candidate, other], check.atol)
    raise SiluFormError(
        "{silu_form} {form}: ONNX Runtime's output differs from the fake-quant model's by {figures} "
        "(max |Δ| / output scale), above atol={tolerance:g}; nothing written. The {other} form passes "
        "({other_figures}): use {silu_form} {other}, or auto (the default), which checks both",
        form=candidate.form,
        figures=_figures(candidate),
        tolerance=check.atol,
        other=other.form,
        other_figures=_figures(other),
    )


def _auto(forms: dict[str, Candidate], check: ParityCheck | None, timer, imgsz: int | None) -> Candidate:
    """Parity first, then speed with a margin; see the module docstring."""
    if check is not None:
        for c in forms.values():
            c.cases = check.measure(c.graph)
        passing = [c for c in forms.values() if c.passes(check.atol)]
        if not passing:
            raise _all_fail(list(forms.values()), check.atol)
        if len(passing) == 1:
            (failed,) = [c for c in forms.values() if c not in passing]
            passing[0].report.silu_reason = (
                f"{failed.form} fails the parity check: max |Δ| {_figures(failed)} is above "
                f"atol={check.atol:g} of the output scale"
            )
            return passing[0]
    graphs = {name: c.graph.SerializeToString() for name, c in forms.items()}
    rounds = timer(graphs, imgsz)
    speedup = qlinear_speedup(rounds)
    chosen = forms["qlinear"] if speedup > 1 + MARGIN else forms[DEFAULT]
    report = chosen.report
    report.silu_timing_ms = {name: statistics.median(ms) for name, ms in rounds.items()}
    report.silu_qlinear_speedup = speedup
    report.silu_reason = _speed_reason(chosen.form, speedup, len(rounds["qlinear"]), check is not None)
    return chosen


def qlinear_speedup(rounds: dict[str, list[float]]) -> float:
    """The median over paired rounds of quickgelu ms / qlinear ms (> 1: qlinear is faster). Pairing cancels
    load that changes from round to round: both forms of a round ran side by side."""
    pairs = list(zip(rounds["quickgelu"], rounds["qlinear"], strict=True))
    if not pairs:
        raise ValueError("no timing rounds")
    return statistics.median(quick / lin if lin > 0 else math.inf for quick, lin in pairs)


def _speed_reason(form: str, speedup: float, n: int, checked: bool) -> str:
    parity = "both forms pass the parity check" if checked else "parity not checked (--no-check)"
    timed = f"qlinear ran {speedup:.2f}x quickgelu's speed (median of {n} paired rounds)"
    if form == "qlinear":
        return f"{parity}; {timed}, above the {1 + MARGIN:.2f}x needed to leave {DEFAULT}"
    return f"{parity}; {timed}, not above {1 + MARGIN:.2f}x: {DEFAULT}, the fixed choice for ties"


# --- errors ---------------------------------------------------------------------------------------


def _figures(c: Candidate) -> str:
    """'0.419 on random 1x3x32x32', worst first, then the other cases: '…, 0.12 on 18 val images'."""
    cases = sorted(c.cases or [], key=lambda case: (math.isnan(case.max_rel), case.max_rel), reverse=True)
    return ", ".join(f"{case.max_rel:.3g} on {_case_label(case)}" for case in cases)


def _case_label(case) -> str:
    return f"{case.shape[0]} val images" if case.input == "val" else case.label()


def _all_fail(forms: list[Candidate], atol: float):
    """The error when no SiLU form passes: each form's figures, and options verified to help."""
    figures = "; ".join(f"{c.form} {_figures(c)}" for c in forms)
    least = min(c.worst() for c in forms)
    accept = "; or accept the difference with {atol} {admit}" if math.isfinite(least) else ""
    on_val = any(case.input == "val" for case in forms[0].cases or [])
    val = "" if on_val else "; {data} D adds the figure on real images"
    return SiluFormError(
        "no SiLU form of the INT8 graph passes the parity check (max |Δ| / output scale, "
        "atol={tolerance:g}): {figures}; nothing written. {int8_target} tensorrt matches the fake-quant "
        "model (Q/DQ only where it quantizes; a graph for TensorRT)" + accept + val,
        tolerance=atol,
        figures=figures,
        admit=atol_to_admit(least) if math.isfinite(least) else "",
    )


def atol_to_admit(value: float) -> str:
    """`value` rounded up to 2 significant digits, as text: an --atol that admits it."""
    if value <= 0:
        return "1e-6"
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / step) * step:.2g}"


# --- timing ---------------------------------------------------------------------------------------


def time_graphs(graphs: dict[str, bytes], imgsz: int | None = None) -> dict[str, list[float]]:
    """{name: [median ms of one batch, per round]} for serialized ONNX graphs, timed in ROUNDS paired
    rounds: every graph once per round, in a fresh session (sessions alive side by side disturb each
    other's threads on small machines), the order reversed every other round. imgsz: see _example."""
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for r in range(ROUNDS):
        order = list(graphs) if r % 2 == 0 else list(reversed(graphs))
        for name in order:
            times[name].append(_median_run_ms(graphs[name], imgsz))
    return times


def _median_run_ms(graph: bytes, imgsz: int | None) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    feed = {i.name: _example(i, imgsz) for i in session.get_inputs()}
    for _ in range(WARMUP):
        session.run(None, feed)
    runs = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        session.run(None, feed)
        runs.append((time.perf_counter() - t0) * 1e3)  # s to ms
    return float(np.median(runs))


def _example(arg, imgsz: int | None = None):
    """Random input for a graph input: a dynamic batch becomes 1, a dynamic height and width (dims 2 and 3
    of an image) `imgsz` (a --dynamic export's own size: at 1x1 a detector's neck cannot concat its
    upsampled maps, and a classifier would be timed on no work at all)."""
    import numpy as np

    shape = [d if isinstance(d, int) else (imgsz or 1) if k >= 2 else 1 for k, d in enumerate(arg.shape)]
    dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)
