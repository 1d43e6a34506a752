"""The `optkit prune` flow: load, measure, prune, (fine-tune), write; returns the report as a dict."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from optkit import limits
from optkit.errors import ConfigError

# Fine-tuning after pruning: AdamW from 2e-3 with cosine decay and no warm-up recovered the demo model
# (yolo-cls-n, 30% of channels removed: 12.5% -> 96.25% top-1 in 3 epochs; 1e-3 gave 95.6%, 5e-4 94.1%).
FINETUNE_LR0 = 0.002
FINETUNE_PROJECT = "runs/prune"  # the fine-tuning run folders: runs/prune/<stem>, <stem>2, ...
# the pruning configs' fields -> the flags that set them: the stages' errors name fields, this flow flags
FLAGS = {"amount": "--amount", "importance": "--importance", "round_to": "--round-to", "ignore": "--ignore",
         "batch_size": "--batch-size"}  # fmt: skip


@dataclass
class PruneRequest:
    weights: str
    amount: float
    scope: str = "global"
    ignore: list[str] = field(default_factory=list)
    structured: bool = False
    importance: str = "l1"
    round_to: int = 8
    data: str | None = None
    finetune_epochs: int = 0
    batch_size: int = 64
    workers: int | None = None
    device: str = ""
    output: str | None = None
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into

    def __post_init__(self) -> None:
        """Each option checked once, against optkit.limits, in the words of its flag."""
        from optkit.stages.prune import SCOPES
        from optkit.stages.prune_structured import IMPORTANCES

        limits.AMOUNT.check("--amount", self.amount)
        if self.scope not in SCOPES:
            raise ConfigError(f"--scope must be {' or '.join(SCOPES)}, got {self.scope!r}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"--importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}"
            )
        limits.ROUND_TO.check("--round-to", self.round_to)
        limits.FINETUNE_EPOCHS.check("--finetune-epochs", self.finetune_epochs)
        if self.finetune_epochs and not self.data:
            raise ConfigError("--finetune-epochs N needs N >= 0 and --data")
        limits.BATCH.check("--batch-size", self.batch_size)
        if self.workers is not None:
            limits.WORKERS.check("--workers", self.workers)


def run_prune(req: PruneRequest, progress=None) -> dict:
    """`progress`: an optkit.report.progress display (default: quiet); a TrainDisplay also shows the
    fine-tuning epochs. Every input is checked before the first step that prints a line."""
    from optkit.checkpoint import save_checkpoint
    from optkit.models import count_params
    from optkit.models.parts import kept_whole
    from optkit.report.progress import Quiet
    from optkit.train.config import require_batch_norm_batch
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import check_run_folder, file_size, stage_output

    progress = progress or Quiet()
    target = stage_output(req.weights, "pruned", req.output)
    if req.finetune_epochs:
        check_run_folder(FINETUNE_PROJECT)  # both outputs checked before any work
    src = open_model(
        req.weights, command="prune", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    if req.finetune_epochs and not src.writes_optkit:
        raise ConfigError(
            f"--finetune-epochs trains with optkit's trainer, which cannot train {req.weights} "
            "(a foreign model); prune without it and fine-tune with the model's own tools"
        )
    measured = _resolve(req, src, progress.line)
    model = src.model()
    if req.finetune_epochs:  # the fine-tune's batch, refused now rather than after pruning
        with limits.options_named(FLAGS):
            require_batch_norm_batch(model, req.batch_size)
    keep = [name for name in kept_whole(model) if name not in req.ignore]  # optkit.models.parts
    result: dict = {"source": req.weights, "output": str(target), "amount": req.amount}
    if keep:
        result["kept_output_layers"] = keep  # a detection head keeps its output layout
    # pruning first (a copy): what it refuses (--ignore, an --amount that removes nothing) is bad input,
    # refused before any step line; the metrics before are measured on the untouched `model` after it
    prune_step = _structured if req.structured else _unstructured
    pruned, transform, facts = prune_step(model, src.imgsz, req, req.ignore + keep, progress)
    result.update(facts, params_before=count_params(model), params_after=count_params(pruned))
    if measured is not None:
        result.update(task=measured.task.name, metrics=measured.shown())
        measured.record(result, "before", measured.on_val(model, src, req, progress, "before pruning"))
        measured.record(result, "pruned", measured.on_val(pruned, src, req, progress, "after pruning"))
    if req.finetune_epochs:
        new = src.stage_checkpoint(pruned, "prune", _args(req), _lineage_metrics(result), transform)
        new, finetuned, result["finetune_run"] = _finetune(new, req, progress)
        measured.record(result, "finetuned", finetuned)
        save_checkpoint(new, target)
    else:
        src.save_stage_output(pruned, target, "prune", _args(req), _lineage_metrics(result), transform)
    result.update(bytes_before=file_size(req.weights), bytes_after=file_size(target))
    return result


@dataclass
class _Measured:
    """How `--data` measures the model: its task (classify: top-1; detect: mAP50-95, mAP50) and the
    dataset it read. The result holds each measurement twice: `metrics_<when>`, every metric the task
    reports, and `<fitness_key>_<when>` (`top1_before` for a classifier, `map_before` for a detector)."""

    task: object  # optkit.tasks.base.Task
    spec: object  # what task.resolve_data returned

    def shown(self) -> list[dict]:
        """The metrics the report shows (key, label, percent): those that pick best.pt, the fitness
        metric first. A classifier's fitness is top-1; a detector's blends mAP50-95 and mAP50 (its
        `fitness_label` names the blend), so both are shown."""
        from optkit.workflows.benchmark import headline_metrics

        metrics = headline_metrics(self.task)[: 2 if self.task.fitness_label else 1]
        return [{"key": m.key, "label": m.label, "percent": m.percent} for m in metrics]

    def label(self) -> str:
        return self.shown()[0]["label"]

    def on_val(self, model, src, req: PruneRequest, progress, when: str) -> dict:
        """The task's metrics of `model` on the val split (optkit.measure.validate.measure_on_val)."""
        from optkit.measure.validate import measure_on_val

        with progress.step(f"{self.label()} {when} on {_val_split(self.spec)}"):
            measured = measure_on_val(
                model, self.task, self.spec, src.names, src.imgsz, req.batch_size, req.workers, req.device,
                src.preprocess,
            )  # fmt: skip
        return measured

    def record(self, result: dict, when: str, metrics: dict) -> None:
        result[f"metrics_{when}"] = {m.key: metrics[m.key] for m in self.task.metrics}
        result[f"{self.task.fitness_key}_{when}"] = metrics[self.task.fitness_key]


def _val_split(spec) -> str:
    """Where the val images are, for a step line: a class-folder tree's val folder, else the dataset
    as given with its split named."""
    folder = getattr(spec, "val_dir", None)
    return str(folder) if folder is not None else f"{spec.name} (val)"


def _resolve(req: PruneRequest, src, log) -> _Measured | None:
    if not req.data:
        return None
    from optkit.measure.validate import check_classes
    from optkit.workflows.val import task_to_measure

    task = task_to_measure(src.task, src.path, src.arch, command="prune --data (metrics before/after)")
    splits = ("train", "val") if req.finetune_epochs else ("val",)  # a detector scans only these
    spec = task.resolve_data(req.data, log=log, splits=splits)
    check_classes(spec, src.names)
    _check_before_work(task, spec, src, req, splits)
    return _Measured(task, spec)


def _check_before_work(task, spec, src, req: PruneRequest, splits: tuple[str, ...]) -> None:
    """What the evaluations and the fine-tuning would refuse later, refused now: the device, and a
    split without images (the task's datasets are made: file names scanned, nothing decoded)."""
    from optkit.device import select_device

    select_device(req.device)
    for split in splits:
        task.image_dataset(spec, list(src.names), src.imgsz, split, src.preprocess)


def _unstructured(model, imgsz: int, req: PruneRequest, ignore: list[str], progress):
    from optkit.stages.prune import PruneConfig, prune_unstructured, sparsity_transform

    config = PruneConfig(amount=req.amount, scope=req.scope, ignore=ignore)
    # line=False: a bar on a terminal only; what pruning refuses is bad input (one error line)
    with progress.step(f"zeroing {req.amount:.0%} of the weights (L1, {req.scope})", line=False):
        pruned, report = prune_unstructured(model, config)
    facts = {"method": f"unstructured L1, {req.scope}", "achieved": report.overall, "layers": report.layers}
    return pruned, sparsity_transform(report), facts


def _structured(model, imgsz: int, req: PruneRequest, ignore: list[str], progress):
    from optkit.measure.flops import count_flops
    from optkit.measure.latency import measure_latency
    from optkit.stages.prune_structured import StructuredPruneConfig, prunable_weight_count, prune_structured

    config = StructuredPruneConfig(
        amount=req.amount,
        importance=req.importance,
        round_to=req.round_to,
        ignore=ignore,
        imgsz=imgsz,
    )
    step = progress.step(f"removing channels ({req.importance}, --amount {req.amount})", line=False)
    with step, limits.options_named(FLAGS):
        pruned, transform = prune_structured(model, config)
    before, after = prunable_weight_count(model), prunable_weight_count(pruned)
    with progress.step("timing latency before and after pruning"):
        lat_before = measure_latency(model, imgsz)["median_ms"]
        lat_after = measure_latency(pruned, imgsz)["median_ms"]
    facts = {
        "method": f"structured channels, {req.importance}, round to {req.round_to}",
        "channels_removed": transform["achieved"]["channel_reduction"],
        "achieved": 1 - after / before,  # removed fraction of prunable weights
        "gflops_before": count_flops(model, imgsz),
        "gflops_after": count_flops(pruned, imgsz),
        "latency_before_ms": lat_before,
        "latency_after_ms": lat_after,
    }
    return pruned, transform, facts


def _finetune(ckpt, req: PruneRequest, progress):
    """Fine-tune with the embedded trainer, on the task's loss (a classifier's cross-entropy, a
    detector's box + class + DFL loss); pruned weights stay zero (the trainer applies the masks). The
    trainer's events go to `progress` (TrainDisplay: the run folder, a bar and a line per epoch).
    Returns (best.pt's checkpoint, its val metrics as the trainer measured them, the run folder)."""
    from optkit.checkpoint import load_checkpoint, save_checkpoint
    from optkit.train.config import TrainConfig
    from optkit.train.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="optkit-prune-") as tmp:
        start = save_checkpoint(ckpt, Path(tmp) / "pruned.pt")
        cfg = TrainConfig(
            weights=str(start),
            data=req.data,
            epochs=req.finetune_epochs,
            batch_size=req.batch_size,
            workers=req.workers,
            device=req.device,
            project=FINETUNE_PROJECT,
            name=Path(req.weights).stem,
            warmup_epochs=0.0,
            lr0=FINETUNE_LR0,
            cos_lr=True,
        )
        result = Trainer(cfg, progress=progress).run()
    best = load_checkpoint(result.best)
    return best, dict(best.metrics), str(result.save_dir)


def _args(req: PruneRequest) -> dict:
    return {k: v for k, v in req.__dict__.items() if k not in ("output", "trust", "code_dir")}


def _lineage_metrics(result: dict) -> dict:
    keys = ("achieved", "params_before", "params_after", "gflops_before", "gflops_after")
    facts = {k: result[k] for k in keys if result.get(k) is not None}
    for when in ("before", "pruned"):  # the task's metrics, e.g. top1_before / map_before, map50_before
        facts.update({f"{k}_{when}": v for k, v in result.get(f"metrics_{when}", {}).items()})
    return facts
