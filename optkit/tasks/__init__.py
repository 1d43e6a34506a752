"""Tasks: what differs between classification and detection, one object each (optkit.tasks.base).

`get_task(name)` returns the task of a checkpoint (its `task` field) or of a zoo model (its registry
spec); `register_task` adds one. The built-in tasks are imported on first use, so `import optkit.tasks`
stays light.
"""

from __future__ import annotations

import importlib

from optkit.tasks.base import Metric, Task, get_task, register_task

BUILTIN_TASKS = ("optkit.tasks.classify", "optkit.tasks.detect")  # modules that register a task when imported

__all__ = ["Metric", "Task", "get_task", "load_builtin_tasks", "register_task"]


def load_builtin_tasks() -> None:
    for module in BUILTIN_TASKS:
        importlib.import_module(module)
