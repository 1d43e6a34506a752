"""Facts about a checkpoint file, for `optkit info`."""

from __future__ import annotations

from pathlib import Path


def describe_checkpoint(path: str | Path) -> dict:
    from optkit.checkpoint import build_model, load_checkpoint
    from optkit.models import count_params

    path = Path(path)
    ckpt = load_checkpoint(path)
    model = build_model(ckpt)  # also proves the file rebuilds
    weights = ckpt.inference_weights()
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
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
    }


def _precision(state: dict) -> str:
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.dtype.is_floating_point})
    return "/".join(dtypes) or "n/a"
