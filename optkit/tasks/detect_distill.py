"""Distillation of a detector from its float self (QAT: optkit.quant.qat), on the head's raw maps and,
optionally, on the neck's feature maps.

Written from the published methods, no code copied:
- head: per anchor, each box side's DFL distribution (softmax over reg_max bins) is pulled towards the
  teacher's by KL divergence (localization distillation, Zheng et al. 2022, "Localization Distillation
  for Dense Object Detection"), weighted by the teacher's confidence at that anchor (its highest class
  probability: a background anchor's box means nothing); each class logit is pulled towards the
  teacher's probability by the Bernoulli KL divergence (BCE against the teacher's sigmoid minus the
  teacher's own entropy, so that it is zero when the two agree).
- features: channel-wise distillation (Shu et al. 2021, "Channel-wise Knowledge Distillation for Dense
  Prediction"; YOLOv6 uses it for its QAT): each channel of a neck map becomes a distribution over its
  H x W positions (softmax at temperature tau), and the student's is pulled towards the teacher's by KL,
  times tau^2.

Scale: like optkit.tasks.detect_loss, the head terms are divided by a summed score (the teacher's
confidence, as the loss divides by its target scores), the feature term is per image, and the total is
multiplied by the batch size, so the gains below balance against the detection loss's (box 7.5, cls 0.5,
dfl 1.5) the same way at any batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optkit.models.detect_blocks import REG_MAX

# gains of the three terms (options "box", "cls", "features" override them). At gain 1, on yolo-det-n
# after PTQ (builtin:shapes-det, 96 px, a batch of 32) the terms per image were box 0.0023, cls 0.019,
# features 0.062 against a detection loss of 3.7 (box 1.37, cls 1.18, dfl 1.13). Measured by
# benchmarks/detect_qat_distill.py (yolo-det-n trained 10 epochs at 96 px: float mAP50-95 / mAP50
# 0.4957 / 0.7198, PTQ max 0.4922 / 0.7167; one QAT epoch on 300 train images, qat's defaults), QAT
# best.pt: no distillation 0.4997 / 0.7213; head 0.4983 / 0.7202; head + features 0.4979 / 0.7227; head
# x10 0.4962 / 0.7220; head x10 + features x10 0.4938 / 0.7187. The neck maps added nothing at either
# weight (fitness 0.5205 vs 0.5204 at 1, 0.5188 vs 0.5163 at 10), so they are off; gain 1 kept more than
# 10. That teacher was undertrained and the PTQ drop small (0.35 points), so training alone gained most.
DEFAULT_GAINS = {"box": 1.0, "cls": 1.0, "features": 0.0}
FEATURE_TEMPERATURE = 1.0  # tau of the channel-wise feature distillation


def detection_distillation(student, teacher, options: dict | None = None) -> torch.Tensor:
    """(box KL + class KL [+ feature CWD]) x gains x batch size of two optkit.tasks.base.DistillPass of a
    detector (outputs: the raw maps, one [B, 4 * reg_max + nc, H, W] per level; features: the neck maps).
    The teacher's tensors carry no gradient. options: temperature (of the box and class
    distributions), box, cls, features (gains), reg_max."""
    options = options or {}
    gains = {k: float(options.get(k, v)) for k, v in DEFAULT_GAINS.items()}
    reg_max = int(options.get("reg_max", REG_MAX))
    t = float(options.get("temperature", 1.0))
    # full precision even inside an autocast region, as the detection loss
    with torch.autocast(student.outputs[0].device.type, enabled=False):
        s_box, s_cls = split_raw(student.outputs, reg_max)
        t_box, t_cls = split_raw([m.detach() for m in teacher.outputs], reg_max)
        batch = s_cls.shape[0]
        total = gains["box"] * box_distillation(s_box, t_box, t_cls, t)
        total = total + gains["cls"] * class_distillation(s_cls, t_cls, t)
        if gains["features"]:
            total = total + gains["features"] * channel_distillation(
                student.features, [f.detach() for f in teacher.features], FEATURE_TEMPERATURE
            )
    return total * batch


def split_raw(raw, reg_max: int):
    """Raw maps -> (box logits [B, N, 4, reg_max], class logits [B, N, nc]) in float32, N anchors over
    all levels (level 0 first, row-major within a level, as the detection loss reads them)."""
    flat = torch.cat([m.float().flatten(2) for m in raw], 2).permute(0, 2, 1)  # [B, N, C]
    box, cls = flat.split((4 * reg_max, flat.shape[-1] - 4 * reg_max), -1)
    return box.reshape(*box.shape[:2], 4, reg_max), cls


def _confidence(t_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the teacher's highest class probability per anchor [B, N], their sum clamped at 1): the weights
    and the normaliser of the head terms (the detection loss normalises by its summed target scores)."""
    weight = t_cls.sigmoid().amax(-1)
    return weight, weight.sum().clamp(min=1.0)


def box_distillation(s_box, t_box, t_cls, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of each side's bin distribution at `temperature`, times T^2, averaged over
    the four sides, summed over the batch's anchors weighted by the teacher's confidence, divided by the
    summed confidence (the detection loss divides by its summed target scores the same way)."""
    t = temperature
    log_s = (s_box / t).log_softmax(-1)
    log_t = (t_box / t).log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean(-1) * t * t  # [B, N]
    weight, norm = _confidence(t_cls)
    return (kl * weight).sum() / norm


def class_distillation(s_cls, t_cls, temperature: float) -> torch.Tensor:
    """Bernoulli KL(teacher || student) of every class probability at `temperature` (times T^2), summed
    over anchors and classes, normalised as box_distillation."""
    t = temperature
    s, tt = s_cls / t, t_cls / t
    p = tt.sigmoid()
    kl = p * (F.logsigmoid(tt) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-tt) - F.logsigmoid(-s))
    _, norm = _confidence(t_cls)
    return kl.sum() * t * t / norm


def channel_distillation(s_feats, t_feats, temperature: float) -> torch.Tensor:
    """Channel-wise distillation over the neck maps: per channel, KL(teacher || student) of the softmax
    over its H x W positions at `temperature`, times T^2; averaged over channels, summed over levels,
    per image."""
    t = temperature
    total = s_feats[0].new_zeros((), dtype=torch.float32)
    for s, f in zip(s_feats, t_feats, strict=True):
        log_s = (s.float().flatten(2) / t).log_softmax(-1)  # [B, C, HW]
        log_t = (f.float().flatten(2) / t).log_softmax(-1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [B, C]
        total = total + kl.mean(1).sum() / s.shape[0] * t * t
    return total
