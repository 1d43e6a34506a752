"""The parts of a model that stages must know, declared by the model itself (timm's `get_classifier`
habit): its head block, and the output layers whose channels are the model's output layout.

Zoo models declare them: the model class names its head block (`head_name()`), and the head block's
class names its output layers (`output_layers`, attribute names inside the block; Classify: its
`linear`). Structured pruning keeps the output layers' channels, unstructured pruning leaves them out of
`--amount`, and a fine-tune on other classes re-initialises them. Models optkit did not build
(YOLOv5 / Ultralytics modules) follow the YOLO layout, `model.model[-1]` being the head; there the
output layer is the head's Linear with `num_classes` outputs when it has one (a classifier), and
otherwise the whole head block keeps its channels (a detection head: its output convs are the box and
class layout).
"""

from __future__ import annotations

from torch import nn


class HeadedSequential(nn.Module):
    """A model whose `self.model` is an nn.Sequential of blocks, the last one the head."""

    model: nn.Sequential

    def head_name(self) -> str:
        return f"model.{len(self.model) - 1}"

    def forward(self, x):
        return self.model(x)


def head_name(model: nn.Module) -> str | None:
    """Qualified name of the block that turns features into the model's outputs, or None."""
    declared = getattr(model, "head_name", None)
    if callable(declared):
        return declared()
    blocks = getattr(model, "model", None)  # the YOLO layout
    if hasattr(blocks, "__len__") and hasattr(blocks, "__getitem__") and len(blocks):
        return f"model.{len(blocks) - 1}"
    return None


def output_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the layers whose output channels are the model's outputs (see the module
    docstring); [] when the model has none that can be told."""
    modules = dict(model.named_modules())
    head = head_name(model)
    block = modules.get(head) if head is not None else None
    declared = getattr(type(block), "output_layers", None) if block is not None else None
    if declared:
        return [f"{head}.{name}" for name in declared]
    scope = [(n, m) for n, m in modules.items() if head is None or n == head or n.startswith(head + ".")]
    linears = [(n, m) for n, m in scope if isinstance(m, nn.Linear)]
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:
        linears = [(n, m) for n, m in linears if m.out_features == num_classes]
    return [linears[-1][0]] if linears else []


def class_layer_names(model: nn.Module) -> list[str]:
    """The output layers whose channels are classes (what a fine-tune on other classes re-initialises):
    the head's declared `class_layers` (a detector's class convs; its box convs keep their meaning), else
    every output layer (a classifier's Linear)."""
    head = head_name(model)
    block = dict(model.named_modules()).get(head) if head is not None else None
    declared = getattr(type(block), "class_layers", None) if block is not None else None
    if declared:
        return [f"{head}.{name}" for name in declared]
    return output_layer_names(model)


def output_layers(model: nn.Module) -> list[nn.Module]:
    modules = dict(model.named_modules())
    return [modules[name] for name in output_layer_names(model)]


def kept_whole(model: nn.Module) -> list[str]:
    """Blocks whose output channels pruning must keep beyond the output layers: the head block of a
    model whose output layers cannot be told (a foreign detection head), else none."""
    head = head_name(model)
    if output_layer_names(model) or head is None:
        return []
    return [head]
