"""Fine-tuning on other classes (issue 13, defect 9, the head message): with the same number of classes
but other names the head's outputs mean other things, so it is re-initialised, and the note says which
names changed and which tensors were re-initialised (it used to say "re-initialised ()" and keep it)."""

from __future__ import annotations

import torch
from image_folders import write_image_folder

from optkit.checkpoint import checkpoint_from_model, save_checkpoint
from optkit.models import create_model
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer


def _start(tmp_path, names):
    torch.manual_seed(123)  # not the trainer's seed (0): a re-initialised head differs from this one
    model = create_model("test-tiny", num_classes=len(names))
    return save_checkpoint(checkpoint_from_model(model, names, 32), tmp_path / "start.pt")


def _finetune(tmp_path, weights, data) -> Trainer:
    cfg = TrainConfig(
        weights=str(weights),
        data=str(data),
        epochs=1,
        imgsz=32,
        batch_size=16,
        workers=0,
        project=str(tmp_path / "runs"),
    )
    trainer = Trainer(cfg)
    trainer.setup()
    return trainer


def _head(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".linear." in k}


def test_same_count_other_names_reinitialises_the_head_and_says_so(tmp_path, tiny_data):
    start = _start(tmp_path, ["ant", "bee", "cow"])  # tiny_data: blue, green, red
    t = _finetune(tmp_path, start, tiny_data)
    before = torch.load(start, weights_only=True)["model"]
    after = t.model.state_dict()
    head = _head(before)
    assert head and all(not torch.equal(before[k], after[k].cpu()) for k in head)  # re-initialised
    body = [k for k in before if k not in head and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k].cpu()) for k in body)  # the rest is kept
    notes = [n for n in t.notes if "class output layers" in n]
    assert len(notes) == 1, t.notes
    note = notes[0]
    assert "(ant, bee, cow)" in note and "(blue, green, red)" in note and "re-initialised" in note
    assert "()" not in note and all(k in note for k in head)

    same = _start(tmp_path, ["blue", "green", "red"])  # the dataset's own names: the head is kept
    t = _finetune(tmp_path, same, tiny_data)
    kept = torch.load(same, weights_only=True)["model"]
    assert all(torch.equal(v, t.model.state_dict()[k].cpu()) for k, v in kept.items())
    assert not [n for n in t.notes if "class output layers" in n]


def test_other_count_names_the_reshaped_tensors(tmp_path):
    data = write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=8)
    start = _start(tmp_path, ["ant", "bee", "cow"])
    t = _finetune(tmp_path, start, data)
    (note,) = [n for n in t.notes if "class output layers" in n]
    assert "3 -> 2 classes" in note and "(cat, dog)" in note
    assert all(k in note for k in _head(torch.load(start, weights_only=True)["model"]))
