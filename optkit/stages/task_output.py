"""The one output tensor an exported model of a task has, whatever the model returns around it.

A foreign detector returns more than its detections in eval mode: YOLOv5 `(y [B, N, 5 + nc], [3 maps])`,
Ultralytics 8.4 `(y [B, 4 + nc, N], {"boxes", "scores", "feats": [3 maps]})`. Ultralytics' own exporter
writes y alone (one output, `output0`), and optkit's detect flows read [B, 4 + nc, N] (docs/architecture.md,
"The task seam": `Task.read_outputs`). `TaskOutput` wraps such a model so that its only output is
`task.read_outputs(output, nc)`: for Ultralytics y itself; for YOLOv5 y turned into [B, 4 + nc, N], class
score = objectness x class probability (the scores the detect task's NMS and mAP read).

Only the tasks in `ONE_OUTPUT_TASKS` are exported through their task's reading; a classifier is exported
as it is (a foreign classifier's probabilities are what its users deploy, and reading them would turn
them into log-probabilities).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from optkit.errors import ConfigError
from optkit.stages.export import flat_tensors

if TYPE_CHECKING:
    from optkit.tasks import Task

# tasks whose exported graph has the single tensor the task reads, and what that tensor holds
ONE_OUTPUT_TASKS = {
    "detect": "box centre x, centre y, width, height in input pixels, then one score per class",
}
# tasks whose graph ends in post-processing after its last layers, kept float in an INT8 graph as in the
# fake-quant model (ModelOpt quantizes Conv/Linear inputs only), and what that post-processing is: on a
# uint8 grid a detector's scores would share the box pixels' steps, or lose everything below 1/255
FLOAT_TAIL_TASKS = {
    "detect": "the box decode (DFL softmax, distances to corners, stride), the class sigmoid, the concat",
}


class TaskOutput(nn.Module):
    """`model` whose output is `task.read_outputs(model(x), num_classes)`: one tensor."""

    def __init__(self, model: nn.Module, task: Task, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.read_outputs(self.model(x), self.num_classes)


@dataclass
class ExportedOutput:
    model: nn.Module  # what the export traces: the model itself, or a TaskOutput around it
    note: str | None  # what the graph's output holds and where it came from; None: the model as it is


def exported_output(model: nn.Module, task_name: str, num_classes: int, imgsz: int) -> ExportedOutput:
    """What to export of `model` (eval mode) so that its graph has the task's one output tensor; a copy
    of the model runs once on a zero image of `imgsz` pixels to see what it returns. A model of another
    task, or one whose output holds no such tensor, is exported as it is (the note says why)."""
    from optkit.tasks import get_task

    layout = ONE_OUTPUT_TASKS.get(task_name)
    if layout is None:
        return ExportedOutput(model, None)
    task = get_task(task_name)
    with torch.no_grad():  # on a copy: a YOLOv5 head caches its grids on the first call
        raw = copy.deepcopy(model)(torch.zeros(1, 3, imgsz, imgsz))
        try:
            read = task.read_outputs(raw, num_classes)
        except ConfigError:
            note = f"the model's output {describe(raw)} was exported as it is: it holds no {task_name} output"
            return ExportedOutput(model, note)
    shape = f"[B, {', '.join(str(d) for d in read.shape[1:])}]"
    if isinstance(raw, torch.Tensor) and raw is read:
        return ExportedOutput(model, f"output0 {shape}: {layout}")
    note = f"output0 {shape}: {layout}; from the model's {describe(raw)}: {_how(flat_tensors(raw), read)}"
    return ExportedOutput(TaskOutput(model, task, num_classes).eval(), note)


def _how(tensors: list[torch.Tensor], read: torch.Tensor) -> str:
    """How the read tensor came out of the model's tensors: one of them, transposed, or YOLOv5's rows
    (box, objectness, class probabilities) turned into box and objectness x class probability."""
    if any(read is t for t in tensors):
        return f"its {describe(read)} tensor alone, as Ultralytics exports it"
    channels, n = read.shape[1], read.shape[2]
    if any(t.ndim == 3 and t.shape[1] == n and t.shape[2] == channels for t in tensors):
        return f"its [B, N, {channels}] tensor transposed"
    return f"YOLOv5's [B, N, {channels + 1}] rows, class score = objectness x class probability"


def describe(output: Any) -> str:
    """A model's output in a few words: shapes of tensors, (tuples), [lists] and {dicts}."""
    if isinstance(output, torch.Tensor):
        return "x".join(str(d) for d in output.shape)
    if isinstance(output, (list, tuple)):
        inner = ", ".join(describe(o) for o in output)
        return f"({inner})" if isinstance(output, tuple) else f"[{inner}]"
    if isinstance(output, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in output.items()) + "}"
    return type(output).__name__
