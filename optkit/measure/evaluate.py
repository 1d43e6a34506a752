"""Accuracy of a model on a labelled loader: top-1, top-5 and cross-entropy loss."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Accuracy:
    top1: float  # fraction in [0, 1]
    top5: float  # fraction in [0, 1]; equals 1.0 when there are <= 5 classes
    loss: float  # mean cross-entropy per image
    images: int
    correct: list[bool] | None = None  # per image in loader order, whether top-1 is right (when asked)

    def as_dict(self) -> dict:
        facts = {"top1": self.top1, "top5": self.top5, "loss": self.loss, "images": self.images}
        return facts if self.correct is None else {**facts, "correct": self.correct}


def evaluate(model, loader, device, amp: bool = False, per_image: bool = False) -> Accuracy:
    """Run `model` (already on `device`) over `loader`; no gradients, eval mode restored after.
    `per_image`: also record which images top-1 gets right (Accuracy.correct, for paired comparisons:
    optkit.measure.paired)."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    n = 0
    correct = [] if per_image else None
    with torch.inference_mode(), torch.autocast("cuda", enabled=amp and device.type == "cuda"):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hits = topk == labels[:, None]
            correct1 += hits[:, 0].sum().item()
            if correct is not None:
                correct += hits[:, 0].tolist()
            correct5 += hits.any(dim=1).sum().item()
            n += labels.numel()
    model.train(was_training)
    if n == 0:
        from optkit.errors import DatasetError

        raise DatasetError("the validation split has no images")
    return Accuracy(top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n, images=n, correct=correct)
