"""The `optkit info` flow: open a model file and describe it (what it is, what it carries, how it was
made). Opening proves the file loads; an optkit checkpoint is also rebuilt, which proves its transforms
replay and its weights fit. The figures a checkpoint carries are named by its task (optkit.tasks): top-1
and top-5 for a classifier, mAP50-95, mAP50, P and R for a detector."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InfoRequest:
    weights: str  # the model file to describe
    trust: bool = False  # load a foreign pickled checkpoint (runs its code)
    code_dir: str | None = None  # with trust: folder put on the import path
    model_name: str | None = None  # a plain state_dict file: the zoo model to load it into


def run_info(req: InfoRequest, progress=None) -> dict:
    """The facts about `req.weights` as plain data (optkit.report.info prints them; --json emits them).
    `progress`: an optkit.report.progress display (default: quiet)."""
    from optkit.report.progress import Quiet
    from optkit.workflows.inputs import open_model

    progress = progress or Quiet()
    src = open_model(
        req.weights, command="info", trust=req.trust, code_dir=req.code_dir, model_name=req.model_name
    )
    with progress.step(f"describing {src.path}", line=False):
        return describe(src)


def describe(src) -> dict:
    """`src`: an opened `optkit.workflows.inputs.ModelInput` (optkit checkpoint, state_dict, foreign file)."""
    if src.foreign is not None:
        return _describe_foreign(src)
    from optkit.models import count_params

    ckpt = src.ckpt
    model = src.model()  # also proves the file rebuilds
    weights = ckpt.inference_weights()
    return {
        "path": str(src.path),
        "format": src.kind,
        "file_bytes": src.path.stat().st_size,
        "arch": ckpt.arch["name"],
        "arch_options": ckpt.arch.get("kwargs") or {},
        "transforms": [t.get("kind") for t in ckpt.transforms],
        "task": ckpt.task,
        "num_classes": ckpt.num_classes,
        "names": ckpt.names,
        "imgsz": ckpt.imgsz,
        "epoch": ckpt.epoch + 1 if ckpt.epoch >= 0 else None,  # 1-based, None when not from training
        "best_fitness": ckpt.best_fitness,
        "metrics": ckpt.metrics,
        **task_figures(ckpt.task, ckpt.metrics),
        "params": count_params(model),
        "precision": _precision(weights),
        "carries": {
            "ema": ckpt.ema is not None,
            "optimizer": ckpt.optimizer is not None,
            "train_state": ckpt.train_args is not None,
        },
        "optkit_version": ckpt.optkit_version,
        "date": ckpt.date,
        "lineage": ckpt.lineage,
        "notes": list(src.notes),
    }


def _describe_foreign(src) -> dict:
    """A trusted foreign file: its module, what the dict carries, and every key it has."""
    from optkit.models import count_params

    fc = src.foreign
    raw = fc.raw if isinstance(fc.raw, dict) else {}
    epoch = raw.get("epoch")
    fitness = raw.get("best_fitness")
    lineage = raw.get("optkit_lineage")
    return {
        "path": str(src.path),
        "format": "foreign",
        "file_bytes": src.path.stat().st_size,
        "arch": src.arch,
        "module_key": fc.key,  # "ema" / "model": where the deployed module was found; None: a bare module
        "task": src.task,
        "num_classes": src.num_classes,
        "names": src.names,
        "imgsz": src.imgsz,
        "stride": src.stride,
        "epoch": epoch + 1 if isinstance(epoch, int) and epoch >= 0 else None,
        "best_fitness": float(fitness) if isinstance(fitness, (int, float)) else None,
        **task_figures(src.task, {}),
        "params": count_params(fc.stored_module),
        "precision": str(fc.dtype).replace("torch.", ""),
        "carries": {
            k: raw.get(k) is not None
            for k in ("model", "ema", "optimizer", "scaler", "updates", "train_args")
        },
        "keys": fc.keys(),
        "version": raw.get("version") if isinstance(raw.get("version"), str) else None,
        "date": raw.get("date") if isinstance(raw.get("date"), str) else None,
        "lineage": lineage if isinstance(lineage, list) else [],
        "notes": list(src.notes),
    }


def task_figures(task_name: str, metrics: dict) -> dict:
    """How the report names a model's figures, from its task: "headline" (the metrics a summary shows:
    classify top-1, top-5; detect mAP50-95, mAP50), "figures" (each task metric `metrics` holds, headline
    first, with its value) and "fitness" (what best_fitness measures: its label and whether it is a
    percentage). A task this optkit does not know names none of them."""
    from optkit.errors import CheckpointError
    from optkit.tasks import get_task
    from optkit.workflows.benchmark import headline_metrics

    try:
        task = get_task(task_name)
    except CheckpointError:
        return {"headline": [], "figures": [], "fitness": {"label": "fitness", "percent": False}}
    headline = headline_metrics(task)
    ordered = headline + [m for m in task.metrics if m not in headline]
    fitness = next((m for m in task.metrics if m.key == task.fitness_key), None)
    return {
        "headline": [_facts(m) for m in headline],
        "figures": [
            {**_facts(m), "value": metrics[m.key]}
            for m in ordered
            if isinstance(metrics.get(m.key), (int, float))
        ],
        "fitness": {
            "label": task.fitness_label or f"val {fitness.label if fitness else task.fitness_key}",
            "percent": not task.fitness_label and bool(fitness and fitness.percent),
        },
    }


def _facts(metric) -> dict:
    return {"key": metric.key, "label": metric.label, "percent": metric.percent}


def _precision(state: dict) -> str:
    """The floating dtypes of the weights, e.g. "float32" or "float16/float32"; "n/a" when none."""
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.dtype.is_floating_point})
    return "/".join(dtypes) or "n/a"
