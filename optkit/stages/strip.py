"""strip: a checkpoint without training state — what to ship, and still fine-tunable.

The EMA weights (when present) become the model; optimizer, AMP scaler, EMA, update count, best
fitness and the trainer's resume state are dropped. `half=True` stores floating tensors in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

from optkit.checkpoint import Checkpoint, without_training_state


@dataclass
class StripConfig:
    half: bool = False  # store floating-point weights as fp16 (halves the file; loads back into fp32 models)


def strip(ckpt: Checkpoint, config: StripConfig = StripConfig()) -> Checkpoint:
    """A new Checkpoint (the input is not modified)."""
    weights = ckpt.inference_weights()
    if config.half:
        weights = {k: v.half() if v.dtype.is_floating_point else v for k, v in weights.items()}
    return without_training_state(ckpt, model=dict(weights))


def dropped_parts(ckpt: Checkpoint) -> list[str]:
    """What strip removes from this checkpoint, for the report."""
    parts = {
        "ema (became the model)": ckpt.ema is not None,
        "optimizer": ckpt.optimizer is not None,
        "amp scaler": ckpt.scaler is not None,
        "resume state": ckpt.train_args is not None,
    }
    return [name for name, present in parts.items() if present]
