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
    spec = _resolve(req, src, progress.line)
    model = src.model()
    if req.finetune_epochs:  # the fine-tune's batch, refused now rather than after pruning
        with limits.options_named(FLAGS):
            require_batch_norm_batch(model, req.batch_size)
    keep = [name for name in kept_whole(model) if name not in req.ignore]  # optkit.models.parts
    result: dict = {"source": req.weights, "output": str(target), "amount": req.amount}
    if keep:
        result["kept_output_layers"] = keep  # a detection head keeps its output layout
    # pruning first (a copy): what it refuses (--ignore, an --amount that removes nothing) is bad input,
    # refused before any step line; the accuracy before is measured on the untouched `model` after it
    prune_step = _structured if req.structured else _unstructured
    pruned, transform, facts = prune_step(model, src.imgsz, req, req.ignore + keep, progress)
    result.update(facts, params_before=count_params(model), params_after=count_params(pruned))
    if spec is not None:
        result["top1_before"] = _top1(model, src, spec, req, progress, "before pruning")
        result["top1_pruned"] = _top1(pruned, src, spec, req, progress, "after pruning")
    if req.finetune_epochs:
        new = src.stage_checkpoint(pruned, "prune", _args(req), _lineage_metrics(result), transform)
        new, result["top1_finetuned"], result["finetune_run"] = _finetune(new, req, progress)
        save_checkpoint(new, target)
    else:
        src.save_stage_output(pruned, target, "prune", _args(req), _lineage_metrics(result), transform)
    result.update(bytes_before=file_size(req.weights), bytes_after=file_size(target))
    return result


def _resolve(req: PruneRequest, src, log):
    if not req.data:
        return None
    from optkit.measure.validate import check_classes
    from optkit.workflows.val import task_to_measure

    task = task_to_measure(src.task, src.path, src.arch, command="prune --data (top-1 before/after)")
    spec = task.resolve_data(req.data, log=log)
    check_classes(spec, src.names)
    _check_before_work(spec, src.names, req)
    return spec


def _check_before_work(spec, names: list[str], req: PruneRequest) -> None:
    """What the evaluations and the fine-tuning would refuse later, refused now: the device, and a
    split without images."""
    from optkit.data import ImageFolder
    from optkit.device import select_device

    select_device(req.device)
    ImageFolder(spec.val_dir, None, classes=list(names))  # scans the folder, decodes nothing
    if req.finetune_epochs:
        ImageFolder(spec.train_dir, None, classes=list(names))


def _top1(model, src, spec, req: PruneRequest, progress, when: str) -> float:
    """The model's fitness on the val split (top-1 for a classifier), measured through its task."""
    from optkit.measure.validate import measure_on_val
    from optkit.tasks import get_task

    task = get_task(src.task)  # known: _resolve refused an unknown task before any work
    with progress.step(f"top-1 {when} on {spec.val_dir}"):
        metrics = measure_on_val(
            model, task, spec, src.names, src.imgsz, req.batch_size, req.workers, req.device, src.preprocess
        )
    return task.fitness(metrics)


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
    """Fine-tune with the embedded trainer; pruned weights stay zero (the trainer applies the masks).
    The trainer's events go to `progress` (TrainDisplay: the run folder, a bar and a line per epoch)."""
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
    return load_checkpoint(result.best), result.best_fitness, str(result.save_dir)


def _args(req: PruneRequest) -> dict:
    return {k: v for k, v in req.__dict__.items() if k not in ("output", "trust", "code_dir")}


def _lineage_metrics(result: dict) -> dict:
    keys = (
        "achieved",
        "params_before",
        "params_after",
        "gflops_before",
        "gflops_after",
        "top1_before",
        "top1_pruned",
    )
    return {k: result[k] for k in keys if result.get(k) is not None}
