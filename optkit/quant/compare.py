"""Float vs quantized on the same images: top-1 of each (with labels) and label-free fidelity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Fidelity:
    images: int
    top1_agreement: float | None  # fraction of images where both models pick the same class
    sqnr_db: float  # 10 log10(sum ref^2 / sum (ref - out)^2) over all logits; inf when equal
    ref_top1: float | None = None  # with labels: top-1 of each model
    top1: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def fidelity(reference, model, batches: Iterable, classify: bool = True) -> Fidelity:
    """Run both models (eval mode, CPU) on `batches` of images or (images, labels) pairs. Models with
    several outputs (detection heads) are compared on all of them; top-1 only when `classify`."""
    import torch

    n = agree = hits_ref = hits = 0
    signal = noise = 0.0
    labelled = classify
    with torch.no_grad():
        for batch in batches:
            images, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
            ref, out = _flat(reference(images)), _flat(model(images))
            signal += ref.pow(2).sum().item()
            noise += (ref - out).pow(2).sum().item()
            n += images.shape[0]
            if not classify:
                continue
            agree += (ref.argmax(1) == out.argmax(1)).sum().item()
            if labels is None:
                labelled = False
            else:
                hits_ref += (ref.argmax(1) == labels).sum().item()
                hits += (out.argmax(1) == labels).sum().item()
    if n == 0:
        from optkit.errors import DatasetError

        raise DatasetError("no images to compare the models on")
    sqnr = 10 * math.log10(signal / noise) if noise > 0 else math.inf
    return Fidelity(
        images=n,
        top1_agreement=agree / n if classify else None,
        sqnr_db=sqnr,
        ref_top1=hits_ref / n if labelled else None,
        top1=hits / n if labelled else None,
    )


def _flat(output):
    """One (N, K) float64 tensor from a model's output: logits as they are, several outputs concatenated."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.double().flatten(1) if output.dim() > 2 else output.double()
    tensors = [
        t for t in (output.values() if isinstance(output, dict) else output) if isinstance(t, torch.Tensor)
    ]
    return torch.cat([t.double().flatten(1) for t in tensors], dim=1)


def sqnr_db(reference_outputs: list, outputs: list) -> float:
    """SQNR (dB) of `outputs` against `reference_outputs` (lists of tensors of equal shapes)."""
    refs, outs = [_flat(r) for r in reference_outputs], [_flat(o) for o in outputs]
    signal = sum(r.pow(2).sum().item() for r in refs)
    noise = sum((r - o).pow(2).sum().item() for r, o in zip(refs, outs, strict=True))
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf
