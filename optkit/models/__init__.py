"""The model zoo: a registry of named architectures, their building blocks, and tiny test models.

Every model is built by `create_model(name, num_classes, **options)` and has the same shape:
`model.model` is an `nn.Sequential` of top-level blocks whose last one is the head, which names its
output layers (optkit.models.parts), and any input side that is a multiple of `model.stride` (32) works.
A classifier's head is a `Classify` (`forward` returns logits (N, num_classes)); a detector's is a
`Detect` (optkit.models.detect_blocks: eval `forward` returns [N, 4 + num_classes, anchors]).

Importing this package registers the families below; it has no other effect.
"""

from __future__ import annotations

from optkit.models import mobilenet, resnet, tiny, yolo, yolo_det  # noqa: F401  (registers the models)
from optkit.models.activations import ACTIVATIONS
from optkit.models.params import count_params
from optkit.models.registry import ModelSpec, create_model, get_spec, list_models, register_model

__all__ = [
    "ACTIVATIONS",
    "ModelSpec",
    "count_params",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
