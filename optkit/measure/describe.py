"""Facts about a model file, for `optkit info`."""

from __future__ import annotations

from pathlib import Path


def describe_checkpoint(path: str | Path) -> dict:
    from optkit.workflows.inputs import open_model

    return describe_input(open_model(path, command="info"))


def describe_input(src) -> dict:
    """`src`: a `optkit.workflows.inputs.ModelInput` (optkit checkpoint, state_dict, foreign file)."""
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


def _precision(state: dict) -> str:
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.dtype.is_floating_point})
    return "/".join(dtypes) or "n/a"
