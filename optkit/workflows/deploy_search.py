"""The search of `optkit deploy` (see optkit.workflows.deploy): the input opened and checked, the
candidates made by the existing flows into the work folder, measured, kept as JSON, and the choice.

Work folder layout: `steps/<key>.pt` (intermediate checkpoints: pruned + fine-tuned, PTQ, QAT; `<key>.json`
beside a PTQ step holds its float/INT8 figures), `train/<key>/` (fine-tune and QAT runs), `files/<key>.onnx`
or `files/<key>_openvino/` (exported candidates), `candidates/<key>.json` (one measured candidate each:
what a resume reuses), and `candidates.json`, `candidates.csv`, `pareto.png` (the whole search, rewritten
at the end).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from optkit.errors import ConfigError, OptkitError
from optkit.workflows.deploy import DeployRequest, default_work, elapsed_since, sha256_of

MIN_PRUNE_STEP = 0.1  # a back-off ratio at least this far from the last ratio within the budget
KEY_CHARS = 16  # hex digits of a sha256 that name a step or candidate file
ROUND_WARMUP = 2  # untimed runs before each round's batch (optkit.workflows.benchmark's figure)
SILU_FORMS = ("quickgelu", "qlinear")  # INT8 SiLU forms tried for a SiLU model (optkit.quant.silu_form)
RUNTIME_FILE = {"onnxruntime": "ONNX file", "openvino": "OpenVINO IR"}  # what a candidate is, in words


def backoff_ratio(within: float | None, missed: float) -> float | None:
    """The prune ratio tried after `missed` misses the budget: halfway back to `within` (the last ratio
    within it), to 0.05; None when nothing was within (pruning cannot rescue an unpruned model that
    misses) or the step back would be under MIN_PRUNE_STEP (0 within, 0.3 missed: 0.15; 0.3, 0.5: 0.4)."""
    if within is None:
        return None
    middle = round((within + missed) / 2 * 20) / 20
    return middle if middle - within >= MIN_PRUNE_STEP - 1e-9 else None


@dataclass
class Source:
    """The input, checked: its checkpoint, task, data, sizes, hash and where the outputs go."""

    path: Path
    ckpt: object  # optkit.checkpoint.Checkpoint
    task: object  # optkit.tasks.Task
    sha256: str
    imgsz: int  # the checkpoint's trained size: accuracy is measured there
    latency_imgsz: int  # where files are timed
    silu: bool  # the model has SiLU: both INT8 SiLU forms are candidates
    output: Path
    work: Path

    @property
    def metric(self):
        """The task's fitness metric (optkit.tasks.Metric): top-1, mAP50-95."""
        return next(m for m in self.task.metrics if m.key == self.task.fitness_key)


def open_source(req: DeployRequest) -> Source:
    """Everything the search would refuse later, refused now: the file (an optkit float checkpoint), its
    task, the data (classes, both splits with images), --imgsz, the output file and the work folder."""
    from torch import nn

    from optkit.checkpoint import build_model
    from optkit.io import check_writable
    from optkit.measure.validate import check_classes
    from optkit.models.imgsz import check_imgsz
    from optkit.ovrt import openvino_module
    from optkit.quant.quantizers import quantize_entry
    from optkit.stages.export import sha256_file
    from optkit.workflows.export import ir_output, onnx_output
    from optkit.workflows.inputs import load_optkit_checkpoint
    from optkit.workflows.outputs import DEFAULT_HINT
    from optkit.workflows.val import task_to_measure

    source = Path(req.weights)
    if req.target == "openvino":
        openvino_module()  # the extra missing: one line before any work
        output = ir_output(source, req.output or str(source.with_name(f"{source.stem}-deploy_openvino")))
    elif req.output is None:
        output = check_writable(source.with_name(f"{source.stem}-deploy.onnx"), hint=DEFAULT_HINT)
    else:
        output = onnx_output(source, req.output)
    work = check_writable(Path(req.work) if req.work else default_work(source), "--work", folder=True)
    if work.exists() and not work.is_dir():
        raise ConfigError(f"--work {work} is a file; give a folder")
    ckpt = load_optkit_checkpoint(source, "deploy")
    if quantize_entry(ckpt.transforms) is not None:
        raise ConfigError(f"{source} is already quantized; deploy starts from a float checkpoint")
    task = task_to_measure(ckpt.task, source, ckpt.arch.get("name"), command="deploy")
    model = build_model(ckpt)
    latency = check_imgsz(req.imgsz or ckpt.imgsz, int(getattr(model, "stride", 32)), "--imgsz")
    spec = task.resolve_data(req.data, log=lambda line: None, splits=("train", "val"))
    check_classes(spec, ckpt.names)
    for split in ("train", "val"):  # a split without images is refused now (names scanned, none decoded)
        task.image_dataset(spec, list(ckpt.names), ckpt.imgsz, split)
    silu = any(isinstance(m, nn.SiLU) for m in model.modules())
    return Source(source, ckpt, task, sha256_file(source), int(ckpt.imgsz), latency, silu, output, work)


class OutOfTime(Exception):
    """--time-budget is spent: no new candidate starts."""


def candidate_label(config: dict) -> str:
    """A short name, e.g. "fp32", "int8", "prune0.3+int8", "int8 float-skip", "int8+qat (qlinear)"."""
    quant = {"fp32": "fp32", "int8": "int8", "int8-skip": "int8 float-skip", "int8-qat": "int8+qat"}
    label = quant[config["quant"]]
    if config.get("prune"):
        label = f"prune{config['prune']:g}+{label}"
    if config.get("silu_form"):
        label += f" ({config['silu_form']})"
    return label


class Search:
    """The candidates, in the order tried (fp32 baseline first); `run` searches, `finish` chooses."""

    def __init__(self, req: DeployRequest, source: Source, progress):
        self.req, self.src, self.progress = req, source, progress
        self.results: list[dict] = []
        self.interrupted = False
        self.out_of_time = False
        self.t0 = time.monotonic()
        self.inputs = {"source_sha256": source.sha256, "data": req.data}  # in every key

    # ---- the search -------------------------------------------------------------------------------

    def run(self) -> None:
        self.base = self.candidate({"prune": 0, "quant": "fp32"})
        if self.base["status"] != "ok":
            raise OptkitError(f"the fp32 baseline could not be measured: {self.base['error']}")
        try:
            within = None  # the last prune ratio with a candidate within the budget
            for ratio in [0, *self.req.prune_ratios]:
                if self.branch(ratio):
                    within = ratio
                    continue
                # a branch that misses the budget: more aggressive ones are not tried, one between
                # it and the last within the budget is (none when even the unpruned model misses)
                middle = backoff_ratio(within, ratio)
                if middle is not None:
                    self.branch(middle)
                break
        except OutOfTime:
            self.out_of_time = True

    def branch(self, ratio: float) -> bool:
        """PTQ of the model pruned by `ratio` (0: unpruned); when it misses the budget, PTQ with the
        most sensitive layers float, then QAT; True when some form is within the budget."""
        prune = {"prune": ratio}
        if self.any_within(self.int8_forms({**prune, "quant": "int8"})):
            return True
        plain = self.step_facts(self.ptq_chain(ratio))
        skip_budget = self.skip_budget(plain)
        qat_from = "int8"
        if skip_budget > 0:
            qat_from = "int8-skip"
            if self.any_within(self.int8_forms({**prune, "quant": "int8-skip", "skip_budget": skip_budget})):
                return True
        if not self.req.qat_epochs:
            return False
        config = {**prune, "quant": "int8-qat", "from": qat_from}
        if qat_from == "int8-skip":
            config["skip_budget"] = skip_budget
        return self.any_within(self.int8_forms(config))

    def skip_budget(self, ptq_facts: dict | None) -> float:
        """Points left for the INT8 layers once the float (pruned) model's own loss against the fp32
        file is counted; auto-skip keeps layers float until the fake-quant loss is within it."""
        key = self.src.task.fitness_key
        if not ptq_facts or ptq_facts.get(f"float_{key}") is None:
            return 0.0
        lost = (self.base["fitness"] - ptq_facts[f"float_{key}"]) * 100
        return round(self.req.max_drop - lost, 4)

    def int8_forms(self, config: dict) -> list[dict]:
        forms = SILU_FORMS if self.src.silu and self.req.target == "onnxruntime" else (None,)
        return [self.candidate({**config, **({"silu_form": f} if f else {})}) for f in forms]

    def any_within(self, results: list[dict]) -> bool:
        return any(r["status"] == "ok" and r["within"] for r in results)

    # ---- one candidate ----------------------------------------------------------------------------

    def candidate(self, config: dict) -> dict:
        """The candidate's result: its stored JSON when a search made it before (`reused`), else made,
        exported, measured and stored now."""
        key = sha256_of(self.candidate_key(config))[:KEY_CHARS]
        stored = self.src.work / "candidates" / f"{key}.json"
        label = candidate_label(config)
        if stored.is_file():
            result = {**json.loads(stored.read_text()), "reused": True}
            self.progress.line(f"{label}: reused {stored}")
        else:
            if self.results and self.req.time_budget_s is not None:
                if elapsed_since(self.t0) > self.req.time_budget_s:
                    raise OutOfTime
            result = {**self.measure(key, label, config), "reused": False}
            # counted before it is stored: a Ctrl-C during the store (its fsync, after the rename has
            # made the file visible) still leaves the measured candidate in the search's results
            self.results.append(result)
            self.write_json(stored, {k: v for k, v in result.items() if k != "reused"})
            return result
        self.results.append(result)
        return result

    def candidate_key(self, config: dict) -> dict:
        """What a candidate's figures depend on: the input and data, the steps that make its checkpoint
        (each with its own settings), how it is exported and the size it is timed at (not the budget:
        a search with another --max-drop reuses it)."""
        export = {"target": self.req.target, "silu": config.get("silu_form")}
        export.update(imgsz=self.src.latency_imgsz, threads=self.req.threads)  # where it is timed
        return {**self.inputs, "chain": self.chain_of(config), "export": export}

    def measure(self, key: str, label: str, config: dict) -> dict:
        t0 = time.monotonic()
        result = {"key": key, "label": label, "config": config, "status": "ok"}
        try:
            model = self.checkpoint_of(config, label)
            exported = self.export(model, key, label, config)
            result.update(self.accuracy(exported, label))
            result.update(self.latency(exported, label), file=str(exported))
            result["bytes"] = _bytes(exported)
        except OptkitError as e:
            from optkit.errors import Interrupted, error_behind

            if isinstance(e, Interrupted) or error_behind(e, KeyboardInterrupt):
                raise
            result.update(status="failed", error=" ".join(str(e).split()))
            self.progress.warn(f"{label}: {result['error']}")
        result["seconds"] = elapsed_since(t0)
        return result

    def accuracy(self, exported: Path, label: str) -> dict:
        """The task's metrics of the exported file on val, run by the target runtime, at the trained size."""
        from optkit.workflows.val import ValRequest, run_val

        metric = self.src.metric
        what = f"{metric.label} of the {RUNTIME_FILE[self.req.target]} on val ({self.src.imgsz} px)"
        with self.progress.step(f"{label}: {what}"):
            measured = run_val(
                ValRequest(str(exported), data=self.req.data, imgsz=self.src.imgsz, workers=self.req.workers)
            )
        metrics = {m.key: measured.get(m.key) for m in self.src.task.metrics}
        fitness = float(measured[self.src.task.fitness_key])
        facts = {"fitness": fitness, "metrics": metrics}
        if self.results:  # the baseline is the first result
            drop = (self.base["fitness"] - fitness) * 100  # points
            facts.update(drop=drop, within=drop <= self.req.max_drop + 1e-9)
        else:
            facts.update(drop=0.0, within=True)
        return facts

    def latency(self, exported: Path, label: str) -> dict:
        """ms per image at the latency size, batch 1, timed in interleaved rounds with the fp32 file;
        `speedup`: the median of the per-round ratios fp32 / this (its quartiles beside it)."""
        from optkit.measure.latency import speedup_stats, time_interleaved

        files = [exported] if not self.results else [Path(self.base["file"]), exported]
        size = self.src.latency_imgsz
        timers = [self.timer(f, size) for f in files]
        with self.progress.step(f"{label}: timing at {size} px against fp32, {self.req.rounds} rounds"):
            times = time_interleaved(timers, self.req.rounds, self.req.runs, self.req.warmup, ROUND_WARMUP)
        round_ms = [[statistics.median(batch) for batch in model] for model in times]
        stats = speedup_stats(round_ms[0], round_ms[-1])
        facts = {
            "latency_ms": statistics.median(round_ms[-1]),
            "base_latency_ms": statistics.median(round_ms[0]),
            "latency_imgsz": size,
            "threads": self.req.threads,
        }
        facts.update({k: stats[k] for k in ("speedup", "speedup_q1", "speedup_q3", "speedup_spread")})
        return facts

    def timer(self, exported: Path, size: int):
        """A BatchTimer of one batch-1 image of `size` through the exported file on the target runtime."""
        if self.req.target == "openvino":
            from optkit.measure.latency import time_calls
            from optkit.ovrt import OvModel

            call = OvModel(exported, self.req.threads).timed_call(1, size)  # compiled for this shape
            return lambda warmup, runs: time_calls(call, warmup, runs)
        from optkit.onnxrt import load_optkit_onnx
        from optkit.workflows.benchmark import _onnx_timer

        return _onnx_timer(load_optkit_onnx(exported, self.req.threads)[0], size, 1)

    def export(self, model: Path, key: str, label: str, config: dict) -> Path:
        """The candidate's ONNX file or IR folder (export's parity checks passed), free in size when it
        is timed at another size than it is measured at. An INT8 IR is made from the Q/DQ flavour export
        picks for OpenVINO."""
        from optkit.workflows.export import ExportRequest, run_export

        openvino = self.req.target == "openvino"
        target = self.src.work / "files" / (f"{key}_openvino" if openvino else f"{key}.onnx")
        int8 = config["quant"] != "fp32"
        with self.progress.step(f"{label}: exporting to {target}"):
            run_export(
                ExportRequest(
                    str(model),
                    output=str(target),
                    imgsz=self.src.imgsz,
                    dynamic=self.src.latency_imgsz != self.src.imgsz,
                    int8_target=self.req.target if int8 and not openvino else None,
                    silu_form=config.get("silu_form") or "auto",
                    format="openvino" if openvino else "onnx",
                )
            )
        return target

    # ---- intermediate checkpoints -----------------------------------------------------------------

    def prune_chain(self, ratio: float) -> list[dict]:
        if not ratio:
            return []
        req = self.req
        return [
            {"prune": ratio, "epochs": req.finetune_epochs, "fraction": req.fraction, "batch": req.batch_size}
        ]

    def ptq_chain(self, ratio: float, skip_budget: float | None = None) -> list[dict]:
        ptq = {"ptq": "int8", "num_images": self.req.num_images}
        if skip_budget is not None:
            ptq.update(ptq="skip", budget=skip_budget)
        return [*self.prune_chain(ratio), ptq]

    def chain_of(self, config: dict) -> list[dict]:
        """The steps that make the candidate's checkpoint from the input, each with the settings that
        change its file (the SiLU form is the export's)."""
        ratio, quant = config["prune"], config["quant"]
        if quant == "fp32":
            return self.prune_chain(ratio)
        if quant == "int8":
            return self.ptq_chain(ratio)
        if quant == "int8-skip":
            return self.ptq_chain(ratio, config["skip_budget"])
        start = self.ptq_chain(ratio, config.get("skip_budget") if config["from"] == "int8-skip" else None)
        req = self.req
        return [*start, {"qat": req.qat_epochs, "fraction": req.fraction, "batch": req.batch_size}]

    def checkpoint_of(self, config: dict, label: str) -> Path:
        chain = self.chain_of(config)
        return self.step(chain, label) if chain else self.src.path

    def step_file(self, chain: list[dict]) -> Path:
        key = sha256_of({**self.inputs, "chain": chain})[:KEY_CHARS]
        return self.src.work / "steps" / f"{key}.pt"

    def step_facts(self, chain: list[dict]) -> dict | None:
        """A PTQ step's figures (float_<key>, int8_<key>, auto_skipped), None before it ran."""
        facts = self.step_file(chain).with_suffix(".json")
        return json.loads(facts.read_text()) if facts.is_file() else None

    def step(self, chain: list[dict], label: str) -> Path:
        """The checkpoint of `chain` (made now unless an earlier search made it)."""
        target = self.step_file(chain)
        if target.is_file():
            return target
        parent = self.step(chain[:-1], label) if len(chain) > 1 else self.src.path
        last = chain[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        if "prune" in last:
            self.prune(parent, last["prune"], target, label)
        elif "ptq" in last:
            self.ptq(parent, last.get("budget"), target, label)
        else:
            self.qat(parent, target, label)
        return target

    def prune(self, parent: Path, ratio: float, target: Path, label: str) -> None:
        from optkit.workflows.prune import PruneRequest, run_prune

        epochs = self.req.finetune_epochs
        pruned = target.with_name(f"{target.stem}-pruned.pt") if epochs else target
        with self.progress.step(f"{label}: removing {ratio:.0%} of the channels (structured, l1)"):
            run_prune(PruneRequest(str(parent), amount=ratio, structured=True, output=str(pruned)))
        if epochs:
            self.finetune(pruned, target, label)

    def finetune(self, pruned: Path, target: Path, label: str) -> None:
        """`prune --finetune-epochs`' recipe (AdamW from its lr0, cosine, no warm-up) in the work folder."""
        from optkit.train.config import TrainConfig
        from optkit.train.trainer import Trainer
        from optkit.workflows.prune import FINETUNE_LR0

        cfg = TrainConfig(
            weights=str(pruned), data=self.req.data, epochs=self.req.finetune_epochs,
            batch_size=self.req.batch_size, workers=self.req.workers, fraction=self.req.fraction,
            project=str(self.src.work / "train"), name=target.stem, exist_ok=True,
            warmup_epochs=0.0, lr0=FINETUNE_LR0, cos_lr=True,
        )  # fmt: skip
        with self.progress.step(f"{label}: fine-tuning {self.req.finetune_epochs} epoch(s)"):
            result = Trainer(cfg).run()
        _copy_atomic(result.best, target)

    def ptq(self, parent: Path, budget: float | None, target: Path, label: str) -> None:
        from optkit.workflows.ptq import PtqRequest, run_ptq

        what = "PTQ INT8" if budget is None else f"PTQ INT8, sensitive layers float to {budget:g} points"
        with self.progress.step(f"{label}: {what} ({self.req.num_images} calibration images)"):
            result = run_ptq(
                PtqRequest(
                    str(parent), self.req.data, num_images=self.req.num_images, auto_skip=budget,
                    batch_size=self.req.batch_size, output=str(target),
                )
            )  # fmt: skip
        keys = [k for k in result if k.startswith(("float_", "int8_"))] + ["auto_skipped", "skipped"]
        self.write_json(target.with_suffix(".json"), {k: result.get(k) for k in keys})

    def qat(self, parent: Path, target: Path, label: str) -> None:
        from optkit.workflows.qat import QatRequest, run_qat

        train = {
            "data": self.req.data, "epochs": self.req.qat_epochs, "batch_size": self.req.batch_size,
            "workers": self.req.workers, "fraction": self.req.fraction,
            "project": str(self.src.work / "train"), "name": target.stem, "exist_ok": True,
        }  # fmt: skip
        with self.progress.step(f"{label}: QAT {self.req.qat_epochs} epoch(s)"):
            result = run_qat(QatRequest(str(parent), train=train))
        _copy_atomic(result["best"], target)

    # ---- the choice -------------------------------------------------------------------------------

    def finish(self) -> dict:
        from optkit.workflows.deploy_output import write_outputs

        candidates = [r for r in self.results[1:] if r["status"] == "ok"]
        within = [r for r in candidates if r["within"]]
        chosen = max(within, key=lambda r: r["speedup"]) if within else None
        metric = self.src.metric
        result = {
            "source": str(self.src.path),
            "source_sha256": self.src.sha256,
            "data": self.req.data,
            "target": self.req.target,
            "task": self.src.task.name,
            "fitness_key": self.src.task.fitness_key,
            "metric": {"key": metric.key, "label": metric.label, "percent": metric.percent},
            "max_drop": self.req.max_drop,
            "imgsz": self.src.imgsz,
            "latency_imgsz": self.src.latency_imgsz,
            "work": str(self.src.work),
            "output": None,
            "baseline": self.results[0] if self.results else None,
            "candidates": self.results,
            "chosen": chosen["key"] if chosen else None,
            "interrupted": self.interrupted,
            "out_of_time": self.out_of_time,
            "seconds": elapsed_since(self.t0),
            "notes": self.notes(chosen),
        }
        if chosen is None:
            result["error"] = self.nothing_within(candidates)
        write_outputs(result, chosen, self.src.output)
        return result

    def notes(self, chosen: dict | None) -> list[str]:
        notes = []
        if self.interrupted:
            notes.append("interrupted: the best candidate found so far")
        if self.out_of_time:
            notes.append(f"--time-budget {self.req.time_budget} spent: no further candidate was started")
        if chosen is not None and chosen["speedup"] < 1:
            notes.append(
                f"{chosen['label']} is slower than the fp32 file at {self.src.latency_imgsz} px "
                f"({chosen['speedup']:.2f}x): nothing tried pays off here"
            )
        return notes

    def nothing_within(self, candidates: list[dict]) -> str:
        unit = "pp" if self.src.metric.percent else "points"
        budget = f"no candidate is within --max-drop {self.req.max_drop:g} ({self.src.metric.label})"
        if not candidates:
            why = "interrupted" if self.interrupted else "no candidate was measured"
            return f"{budget}: {why}; nothing written"
        closest = min(candidates, key=lambda r: r["drop"])
        return (
            f"{budget}: the closest is {closest['label']} (drop {closest['drop']:.2f} {unit}, "
            f"{closest['speedup']:.2f}x); nothing written (the table is in {self.src.work})"
        )

    def write_json(self, path: Path, data: dict) -> None:
        from optkit.io import atomic_write_text

        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _bytes(exported: Path) -> int:
    """Bytes a user ships: the ONNX file, or the IR folder's .xml and .bin."""
    if exported.is_dir():
        return sum(p.stat().st_size for p in exported.iterdir() if p.suffix in (".xml", ".bin"))
    return exported.stat().st_size


def _copy_atomic(source: str | Path, target: Path) -> None:
    from optkit.io import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
