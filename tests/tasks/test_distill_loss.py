"""Task.distill_loss (QAT's distillation from the float model): zero when the student's pass equals the
teacher's, positive otherwise, gradients to the student only; a classifier's is the KL QAT always used,
a detector's covers the DFL bins, the class logits and (with a gain) the neck maps."""

from __future__ import annotations

import pytest
import torch

from optkit.tasks import get_task
from optkit.tasks.base import DistillPass

NC = 3
BINS = 16  # reg_max of optkit's detectors
SHAPES = ((8, 8), (4, 4), (2, 2))  # three levels of a 64 px input
CHANNELS = (8, 16, 16)  # neck maps


def _detector_pass(seed: int, requires_grad: bool = False) -> DistillPass:
    g = torch.Generator().manual_seed(seed)
    raw = [torch.randn(2, 4 * BINS + NC, h, w, generator=g) * 2 for h, w in SHAPES]
    features = [torch.randn(2, c, h, w, generator=g) for c, (h, w) in zip(CHANNELS, SHAPES, strict=True)]
    for t in raw + features:
        t.requires_grad_(requires_grad)
    return DistillPass(raw, features)


def _copy(p: DistillPass, requires_grad: bool) -> DistillPass:
    def clone(ts):
        return [t.detach().clone().requires_grad_(requires_grad) for t in ts]

    return DistillPass(clone(p.outputs), clone(p.features) if p.features is not None else None)


def test_classify_distillation_is_the_temperature_scaled_kl():
    task = get_task("classify")
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    for temperature in (1.0, 2.5):
        got = task.distill_loss(DistillPass(s), DistillPass(t), {"temperature": temperature})
        p_t = (t / temperature).softmax(1)
        by_hand = (p_t * (p_t.log() - (s / temperature).log_softmax(1))).sum() / 5 * temperature**2
        assert got.item() == pytest.approx(by_hand.item(), rel=1e-5) and got.item() > 0
    same = task.distill_loss(DistillPass(s), DistillPass(s.clone()), {"temperature": 2.0})
    assert abs(same.item()) < 1e-6


@pytest.mark.parametrize("task_name", ["classify", "detect"])
def test_distillation_reaches_the_student_only(task_name):
    task = get_task(task_name)
    if task_name == "classify":
        teacher = DistillPass(torch.randn(4, 3, requires_grad=True))
        student = DistillPass(torch.randn(4, 3, requires_grad=True))
        tensors = [student.outputs], [teacher.outputs]
    else:
        teacher, student = _detector_pass(0, requires_grad=True), _detector_pass(1, requires_grad=True)
        tensors = student.outputs + student.features, teacher.outputs + teacher.features
    loss = task.distill_loss(student, teacher, {"temperature": 1.0, "features": 1.0})
    assert loss.item() > 0
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors[0])
    assert all(t.grad is None for t in tensors[1])


@pytest.mark.parametrize("features", [0.0, 1.0])
def test_detect_distillation_is_zero_against_itself(features):
    task = get_task("detect")
    teacher = _detector_pass(0)
    loss = task.distill_loss(_copy(teacher, True), teacher, {"features": features})
    assert loss.item() == 0.0


def test_detect_distillation_terms_each_see_their_part():
    """Changing only the box bins, only the class logits, or only the neck maps: the matching term
    alone moves (the feature term only with a gain); box bins count where the teacher is confident."""
    from optkit.tasks.detect_distill import detection_distillation

    teacher = _detector_pass(0)
    only = {
        part: {k: float(k == part) for k in ("box", "cls", "features")} for part in ("box", "cls", "features")
    }

    def changed(part: str) -> DistillPass:
        s = _copy(teacher, False)
        with torch.no_grad():
            if part == "features":
                s.features[1] += torch.randn_like(s.features[1])
            for level in s.outputs:
                if part == "box":
                    level[:, : 4 * BINS] += torch.randn_like(level[:, : 4 * BINS])
                if part == "cls":
                    level[:, 4 * BINS :] += 1.0
        return s

    for part in ("box", "cls", "features"):
        student = changed(part)
        for term, gains in only.items():
            value = detection_distillation(student, teacher, gains).item()
            assert (value > 0) == (term == part), (part, term, value)
    # box bins that differ only where the teacher sees nothing (class logits -20: p ~ 2e-9) cost ~nothing
    background = _copy(teacher, False)
    with torch.no_grad():
        for level in background.outputs:
            level[:, 4 * BINS :] = -20.0
    student = _copy(background, False)
    with torch.no_grad():
        for level in student.outputs:
            level[:, : 4 * BINS] += torch.randn_like(level[:, : 4 * BINS])
    assert 0 < detection_distillation(student, background, only["box"]).item() < 1e-6
    assert detection_distillation(changed("box"), teacher, only["box"]).item() > 1e-2


def test_detect_distillation_scales_with_the_batch_like_the_loss():
    """The detection loss is per image times the batch size; so is its distillation term: the same image
    twice over gives twice the term."""
    task = get_task("detect")
    teacher, student = _detector_pass(0), _detector_pass(1)

    def doubled(p: DistillPass) -> DistillPass:
        return DistillPass([torch.cat((t, t)) for t in p.outputs], [torch.cat((f, f)) for f in p.features])

    options = {"features": 1.0}
    one = task.distill_loss(student, teacher, options).item()
    two = task.distill_loss(doubled(student), doubled(teacher), options).item()
    assert two == pytest.approx(2 * one, rel=1e-4)


def test_detect_distill_forward_gives_the_same_pass_in_training_and_eval_mode():
    """The student runs its training forward (raw maps, neck maps caught by a hook); the teacher, in eval
    mode, gives the same maps without decoding. On a fused model (no BatchNorm: as QAT's are) they agree."""
    from optkit.models import create_model
    from optkit.stages.fuse import FuseConfig, fuse

    task = get_task("detect")
    torch.manual_seed(0)
    model, _ = fuse(create_model("test-det", num_classes=NC).eval(), FuseConfig(check=False, imgsz=64))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        teacher = task.distill_forward(model.eval(), x)
        student = task.distill_forward(model.train(), x)
    assert [tuple(t.shape) for t in student.outputs] == [(2, 4 * BINS + NC, h, w) for h, w in SHAPES]
    assert len(student.features) == 3
    for a, b in zip(student.outputs + student.features, teacher.outputs + teacher.features, strict=True):
        assert torch.equal(a, b)
    assert not model._forward_pre_hooks and not any(m._forward_pre_hooks for m in model.modules())
