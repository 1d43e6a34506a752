"""Post-training INT8 quantization, the library half: models, configs and image batches in, models and
plain data out (the `optkit ptq-calibrate` flow around it is optkit.workflows.ptq).

1. The float model is fused (Conv+BN folded, recorded as a `fuse` transform), because deployed graphs
   are fused and the quantizer ranges must be those of the fused convs.
2. ModelOpt quantizers go in (optkit.quant.quantizers) and are calibrated on batches of images the
   caller reads (the train split, preprocessed as for validation).
3. The float ONNX graph of the same model is run on the same images to measure the ranges the
   onnxruntime INT8 flavour needs beyond ModelOpt's (optkit.quant.ranges).
4. The quantized checkpoint records both transforms and every amax, and must rebuild to the calibrated
   model's outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from optkit.quant.config import QuantConfig

if TYPE_CHECKING:
    from torch import nn

    from optkit.checkpoint import Checkpoint


def fused_for_quantization(
    model: nn.Module, imgsz: int, foreign: bool = False
) -> tuple[nn.Module, dict | None]:
    """(a fused copy of `model`, its checkpoint transform entry or None when nothing was folded).
    `foreign`: YOLO Conv blocks get their own fused layout (no .bn, forward_fuse), as their fuse() leaves
    them, so that their tools still load the file."""
    from optkit.stages.fuse import FuseConfig, fuse, fuse_transform

    fused, report = fuse(model, FuseConfig(check=True, imgsz=imgsz))
    if foreign:
        from optkit.foreign.fuse import yolo_fused_layout_

        yolo_fused_layout_(fused, report.fused)
    return fused, fuse_transform(report.fused)


def calibrate_on(
    qmodel: nn.Module, config: QuantConfig, batches: list, on_batch: Callable[[int], None] | None = None
) -> None:
    """Calibrate `qmodel`'s quantizers in place on image `batches` (config.method); `on_batch(images)`
    after each batch (a progress bar). Leaves the model in eval mode."""
    from optkit.quant.quantizers import calibrate

    def forward_loop(model):
        for x in batches:
            model(x)
            if on_batch is not None:
                on_batch(len(x))

    calibrate(qmodel, forward_loop, config.method, config.percentile)
    qmodel.eval()


def with_config(fused: nn.Module, qmodel: nn.Module, config: QuantConfig) -> nn.Module:
    """A model quantized with `config` (its final skip list), carrying qmodel's calibrated ranges."""
    from optkit.quant.quantizers import insert_quantizers, quantizers

    final = insert_quantizers(copy.deepcopy(fused), config)
    calibrated = quantizers(qmodel)
    for name, q in quantizers(final).items():
        q.amax = calibrated[name].amax.detach().clone()
    return final.eval()


def with_activation(ckpt: Checkpoint, act: str) -> Checkpoint:
    """The checkpoint with every activation of its architecture swapped to `act` (same weights: activations
    have none). ReLU-class activations run fully in int8 on ONNX Runtime; QAT recovers the accuracy."""
    import dataclasses

    from optkit.models.activations import check_act

    check_act(act)
    kwargs = {**(ckpt.arch.get("kwargs") or {}), "act": act}
    return dataclasses.replace(ckpt, arch={**ckpt.arch, "kwargs": kwargs})


def onnx_ranges_of(qmodel: nn.Module, imgsz: int, calib: list, output_names: tuple[str, ...]) -> dict:
    """Ranges of the tensors of qmodel's float ONNX graph on the calibration batches (quant.ranges); the
    graph's outputs named as the export will name them (`output_names`, the task's)."""
    from optkit.quant.quantizers import quantization_off
    from optkit.quant.ranges import tensor_ranges
    from optkit.stages.export import ExportConfig, float_graph

    with quantization_off(qmodel):
        config = ExportConfig(imgsz=imgsz, dynamic=True, output_names=output_names)  # any batch size
        proto, *_ = float_graph(qmodel, config)
    return tensor_ranges(proto, calib)


def quantized_checkpoint(
    ckpt: Checkpoint, qmodel: nn.Module, config: QuantConfig, ranges: dict, fuse_transform: dict | None
) -> Checkpoint:
    """`ckpt` (the float source) with the fuse and quantize transforms appended, qmodel's weights and
    amax, and no training state."""
    from optkit.checkpoint import state_dict_cpu, without_training_state
    from optkit.quant.quantizers import transform_entry

    transforms = list(ckpt.transforms) + ([fuse_transform] if fuse_transform else [])
    transforms.append(transform_entry(qmodel, config, ranges))
    return without_training_state(ckpt, model=state_dict_cpu(qmodel), transforms=transforms)


def check_rebuilds(ckpt: Checkpoint, qmodel: nn.Module, x) -> None:
    """The checkpoint must rebuild (replay + strict load) to the calibrated model's outputs on `x`."""
    import torch

    from optkit.checkpoint import build_model
    from optkit.errors import CheckpointError

    with torch.no_grad():
        if not torch.equal(build_model(ckpt)(x), qmodel(x)):
            raise CheckpointError(
                "the quantized checkpoint does not rebuild to the calibrated model (an optkit bug)"
            )


def modelopt_save_format(qmodel: nn.Module) -> dict:
    """ModelOpt's own save format of a quantized module, for files that keep a foreign layout:
    `modelopt_state` (the quantizer recipe) and `modelopt_weights` (state_dict with every amax).
    ModelOpt's quantized classes cannot be pickled; `mto.restore_from_modelopt_state(model,
    obj["modelopt_state"])` then `model.load_state_dict(obj["modelopt_weights"])` rebuild the module."""
    import modelopt.torch.opt as mto

    from optkit.checkpoint import state_dict_cpu

    return {"modelopt_state": mto.modelopt_state(qmodel), "modelopt_weights": state_dict_cpu(qmodel)}
