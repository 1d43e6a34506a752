"""The `optkit deploy` flow: the fastest file within an accuracy budget, searched and measured on the
target runtime: an ONNX file for ONNX Runtime (`--target onnxruntime`, the default) or an IR folder for
OpenVINO (`--target openvino`).

A candidate is a chain of existing flows run into the work folder: structured prune + fine-tune
(`run_prune`, then the trainer), PTQ INT8 (`run_ptq`: the detector's post-processing kept float), PTQ with
the most sensitive layers kept float (`run_ptq` with `auto_skip`), QAT (`run_qat`), then `run_export`
(parity-checked by export; an IR is also checked against its ONNX file and, when INT8, made from the Q/DQ
flavour export chooses for OpenVINO: workflows.export.openvino_int8_target) and `run_val` of the
exported file on the target runtime. Nothing is judged on a fake-quant model: a candidate's accuracy is
its task's fitness metric (`Task.fitness_key`: top-1 for a classifier, mAP50-95 for a detector) of the
exported file on val at the checkpoint's trained size, and its drop is in points (hundredths of the
metric) below the fp32 export of the input, measured the same way. Its latency is the exported file's,
timed on the target runtime at `imgsz`, batch 1, in interleaved rounds with the fp32 file
(optkit.measure.latency: paired per-round ratios, so load that comes and goes cancels); OpenVINO runs
with its default precision, as a user's `compile_model` does (bf16 for float layers on CPUs that have
it), for accuracy and latency alike. Float-kept layers cost what they cost because the real file is timed.

The search (no grid; Search.run): the fp32 baseline; PTQ INT8; while a branch is within the budget the
next, more aggressive one (structured prune `prune_ratios[0]`, then `[1]`, ... each followed by PTQ); a
branch whose PTQ misses backs off to PTQ keeping the most sensitive layers float (auto-skip with the
budget left once the float model's own loss is counted), then to QAT of that, before the branch is given
up (and with it the more aggressive ones) for one ratio halfway back to the last ratio within the budget
(deploy_search.backoff_ratio: 0.15 after 0.3 misses). For a SiLU model on ONNX Runtime each INT8
checkpoint is exported in both SiLU forms (quickgelu, qlinear), and both are measured; OpenVINO fuses
SiLU into its Swish, so there is one form. The fp32 baseline is the reference, not a candidate: deploy
ships an optimised file or says that none is within the budget.

Resume: each candidate's measured result is `candidates/<key>.json` in the work folder, key = sha256 of
the input file's sha256, the data, the chain of steps with the settings that change each step's file
(prune ratio, fine-tune epochs, fraction; calibration images, float-kept budget; QAT epochs), the export
target, SiLU form and latency size (not --max-drop: another budget reuses them); every intermediate
checkpoint is `steps/<key>.pt`, written atomically. A repeated or killed search
reuses them (`reused: true`). `time_budget_s` stops starting candidates once spent; Ctrl-C (or SIGTERM)
ends the search and the best so far is returned (and written), `interrupted: true`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from optkit import limits
from optkit.errors import ConfigError, OptkitError

TARGETS = ("onnxruntime", "openvino")  # where candidates are exported to, validated and timed
DEFAULT_PRUNE = (0.3, 0.5)  # structured channel ratios tried, in order, while branches are within budget
WORK_ROOT = "runs/deploy"  # default work folder: runs/deploy/<stem>
MAX_DROP = 100.0  # points of a metric in [0, 1]
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")  # "90", "90s", "20m", "1.5h"
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


class DeployError(OptkitError):
    """No candidate is within the budget (the message names the closest one)."""


def parse_duration(text: str | None) -> float | None:
    """Seconds of a duration written `90`, `90s`, `20m` or `1.5h`; None for None."""
    if text is None:
        return None
    found = DURATION.match(str(text))
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"--time-budget takes a positive duration such as 90s, 20m or 1.5h, got {text!r}")
    return float(found.group(1)) * SECONDS[found.group(2)]


@dataclass
class DeployRequest:
    weights: str
    data: str
    max_drop: float  # points of the task's fitness metric (percentage points of top-1; 0.5 = 0.005 mAP)
    target: str = "onnxruntime"
    imgsz: int | None = None  # latency size; None: the checkpoint's
    time_budget: str | None = None  # e.g. "20m": no candidate is started after it is spent
    work: str | None = None  # work folder; None: runs/deploy/<stem>
    output: str | None = None  # the chosen .onnx (IR folder); None: <stem>-deploy.onnx (-deploy_openvino/)
    threads: int | None = None  # the runtime's threads for timing; None: its default
    prune_ratios: list[float] = field(default_factory=lambda: list(DEFAULT_PRUNE))
    finetune_epochs: int = 10  # after each structured prune; 1 left a 30% prune 8.7 points down (README)
    qat_epochs: int = 1  # 0: no QAT back-off
    fraction: float = 1.0  # share of the train split the fine-tunes and QAT read
    num_images: int = 256  # calibration images
    batch_size: int = 32
    workers: int | None = None
    rounds: int = 5  # interleaved timing rounds against the fp32 file
    runs: int = 10  # timed runs per file and round
    warmup: int = 5

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        value = self.max_drop
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DROP:
            raise ConfigError(
                f"--max-drop takes the points of accuracy you accept to lose, in [0, {MAX_DROP:g}], "
                f"got {value}"
            )
        self.time_budget_s = parse_duration(self.time_budget)
        for ratio in self.prune_ratios:
            limits.AMOUNT.check("--prune", ratio)
            if ratio == 0:
                raise ConfigError("--prune takes channel ratios in (0, 1); use --no-prune to try none")
        limits.FINETUNE_EPOCHS.check("--finetune-epochs", self.finetune_epochs)
        limits.FINETUNE_EPOCHS.check("--qat-epochs", self.qat_epochs)
        limits.FRACTION.check("--fraction", self.fraction)
        limits.NUM_IMAGES.check("--num-images", self.num_images)
        limits.CALIBRATION_BATCH.check("--batch-size", self.batch_size)
        limits.ROUNDS.check("--rounds", self.rounds)
        limits.RUNS.check("--runs", self.runs)
        limits.WARMUP.check("--warmup", self.warmup)
        if self.threads is not None:
            limits.THREADS.check("--threads", self.threads)
        if self.workers is not None:
            limits.WORKERS.check("--workers", self.workers)


def run_deploy(req: DeployRequest, progress=None) -> dict:
    """Search, measure, choose; returns the result (report.deploy prints it). `chosen` is None when no
    candidate is within the budget (then `error` says which came closest, and nothing is written to the
    output). Every input and output location is checked before the first step."""
    from optkit.report.progress import Quiet
    from optkit.workflows.deploy_search import Search, open_source

    progress = progress or Quiet()
    source = open_source(req)  # the file, the data, the sizes, both output locations: checked first
    search = Search(req, source, progress)
    try:
        search.run()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the best so far
        search.interrupted = True
    except OptkitError as e:
        from optkit.errors import Interrupted, error_behind

        if not (isinstance(e, Interrupted) or error_behind(e, KeyboardInterrupt)):
            raise
        search.interrupted = True  # the trainer words a Ctrl-C as Interrupted
    return search.finish()


def sha256_of(data: dict | str) -> str:
    """sha256 hex of a string, or of a dict as sorted JSON."""
    text = data if isinstance(data, str) else json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def elapsed_since(t0: float) -> float:
    return time.monotonic() - t0


def default_work(weights: str | Path) -> Path:
    return Path(WORK_ROOT) / Path(weights).stem
