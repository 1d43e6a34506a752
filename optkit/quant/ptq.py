"""The `optkit ptq-calibrate` flow: fold BN, insert INT8 quantizers, calibrate, measure, write.

1. The checkpoint's inference model is fused (Conv+BN folded, recorded as a `fuse` transform), because
   deployed graphs are fused and the quantizer ranges must be those of the fused convs.
2. ModelOpt quantizers go in (optkit.quant.quantizers) and are calibrated on `num_images` images of the
   train split, preprocessed as for validation (no augmentation), spread evenly over the split.
3. The float ONNX graph of the same model is run on the same images to measure the ranges the
   onnxruntime INT8 flavour needs beyond ModelOpt's (optkit.quant.ranges).
4. Float and fake-quant INT8 are compared on the val split: top-1 of each, top-1 agreement, SQNR.
5. Optional: per-layer sensitivity, and `auto_skip` keeping the most sensitive layers in float.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from optkit.errors import ConfigError
from optkit.quant.config import QuantConfig, check_num_images

SENSITIVITY_IMAGES = 128  # calibration images the per-layer SQNR is measured on (enough to rank layers)


@dataclass
class PtqRequest:
    weights: str
    data: str
    num_images: int = 512
    quant: QuantConfig = field(default_factory=QuantConfig)
    sensitivity: bool = False
    sensitivity_metric: str = "sqnr"
    auto_skip: float | None = None  # max top-1 drop in percentage points
    act: str | None = None  # swap the architecture's activation (e.g. silu -> relu) before quantizing
    batch_size: int = 32
    output: str | None = None

    def validate(self) -> PtqRequest:
        from optkit.quant.sensitivity import METRICS

        self.quant.validate()
        check_num_images(self.num_images)
        if self.sensitivity_metric not in METRICS:
            raise ConfigError(
                f"--sensitivity-metric must be one of {', '.join(METRICS)}, got {self.sensitivity_metric!r}"
            )
        if self.auto_skip is not None and not 0 <= self.auto_skip <= 100:
            raise ConfigError(
                f"--auto-skip takes a top-1 drop in percentage points in [0, 100], got {self.auto_skip}"
            )
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"--batch-size must be in [1, 4096], got {self.batch_size}")
        return self


def run_ptq(req: PtqRequest) -> dict:
    from optkit.checkpoint import build_model, load_checkpoint, save_checkpoint
    from optkit.cli.outputs import file_size, stage_output
    from optkit.data import resolve_data
    from optkit.measure.validate import check_classes
    from optkit.quant.quantizers import quantize_entry, quantized_layers

    req.validate()
    target = stage_output(req.weights, "int8", req.output)
    ckpt = load_checkpoint(req.weights)
    if quantize_entry(ckpt.transforms) is not None:
        raise ConfigError(f"{req.weights} is already quantized (ptq-calibrate takes a float checkpoint)")
    spec = resolve_data(req.data)
    check_classes(spec, ckpt.names)
    val = _val_batches(spec, ckpt, req)
    result: dict = {"source": req.weights, "output": str(target), "method": req.quant.method, "act": req.act}
    if req.act:
        result["original_top1"] = _top1(build_model(ckpt), val)
        ckpt = _with_activation(ckpt, req.act)
    fused, fuse_transform = _fused(build_model(ckpt), ckpt.imgsz)
    calib = _calibration_batches(spec, ckpt, req)
    qmodel, result["calibration_s"] = _calibrated(fused, req.quant, calib)
    result["num_images"] = sum(len(b) for b in calib)
    if req.sensitivity or req.auto_skip is not None:
        _sensitivity(qmodel, calib, val, req, result)
    measured = _compare(fused, qmodel, val)
    result.update(measured, skipped=list(req.quant.skip) + result.get("auto_skipped", []))
    final_config = QuantConfig(**{**req.quant.as_dict(), "skip": result["skipped"]})
    qmodel = _with_config(fused, qmodel, final_config)
    t0 = time.perf_counter()
    ranges = onnx_ranges_of(qmodel, ckpt.imgsz, calib)
    result["ranges_s"] = time.perf_counter() - t0
    new = _checkpoint(ckpt, qmodel, final_config, ranges, fuse_transform)
    new.add_lineage(
        "ptq-calibrate",
        _args(req),
        {k: result[k] for k in ("float_top1", "int8_top1", "top1_agreement", "sqnr_db")},
    )
    _check_rebuilds(new, qmodel, calib[0])
    save_checkpoint(new, target)
    result.update(
        quantized_layers=len(quantized_layers(qmodel)),
        bytes_before=file_size(req.weights),
        bytes_after=file_size(target),
    )
    return result


def _with_activation(ckpt, act: str):
    """The checkpoint with every activation of its architecture swapped to `act` (same weights: activations
    have none). ReLU-class activations run fully in int8 on ONNX Runtime; QAT recovers the accuracy."""
    import dataclasses

    from optkit.models.activations import check_act

    check_act(act)
    kwargs = {**(ckpt.arch.get("kwargs") or {}), "act": act}
    return dataclasses.replace(ckpt, arch={**ckpt.arch, "kwargs": kwargs})


def _top1(model, val: list) -> float:
    from optkit.quant.compare import fidelity

    return fidelity(model, model, val).top1


def _fused(model, imgsz: int):
    from optkit.stages.fuse import FuseConfig, fuse

    fused, report = fuse(model, FuseConfig(check=True, imgsz=imgsz))
    return fused, ({"kind": "fuse", "fused": report.fused} if report.fused else None)


def _calibration_batches(spec, ckpt, req: PtqRequest) -> list:
    from optkit.data.subset import split_batches
    from optkit.stages.export import preprocess_of

    batches = split_batches(
        spec.train_dir, ckpt.names, ckpt.imgsz, preprocess_of(ckpt), req.num_images, req.batch_size
    )
    if not batches:
        from optkit.errors import DatasetError

        raise DatasetError(f"{spec.train_dir} has no images to calibrate on")
    return batches


def _val_batches(spec, ckpt, req: PtqRequest) -> list:
    """The whole val split as (images, labels) batches, decoded once (it is run many times)."""
    import torch

    from optkit.data import ImageFolder, ValTransform
    from optkit.stages.export import preprocess_of

    pre = preprocess_of(ckpt)
    dataset = ImageFolder(
        spec.val_dir, ValTransform(ckpt.imgsz, mean=pre["mean"], std=pre["std"]), classes=list(ckpt.names)
    )
    batches = []
    for i in range(0, len(dataset), 128):
        items = [dataset[j] for j in range(i, min(i + 128, len(dataset)))]
        batches.append((torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])))
    return batches


def _calibrated(fused, config: QuantConfig, calib: list):
    from optkit.quant.quantizers import calibrate, insert_quantizers

    qmodel = insert_quantizers(copy.deepcopy(fused), config)
    t0 = time.perf_counter()

    def forward_loop(model):
        for x in calib:
            model(x)

    calibrate(qmodel, forward_loop, config.method, config.percentile)
    return qmodel.eval(), time.perf_counter() - t0


def _sensitivity(qmodel, calib, val, req: PtqRequest, result: dict) -> None:
    from optkit.quant.sensitivity import auto_skip, sensitivity

    def top1_of(model):
        return _top1(model, val)

    n, few = 0, []
    for x in calib:  # the first SENSITIVITY_IMAGES calibration images
        few.append(x[: SENSITIVITY_IMAGES - n])
        n += len(few[-1])
        if n >= SENSITIVITY_IMAGES:
            break
    t0 = time.perf_counter()
    ranked = sensitivity(qmodel, few, req.sensitivity_metric, top1_of)
    result["sensitivity"] = [r.as_dict() for r in ranked]
    result["sensitivity_s"] = time.perf_counter() - t0
    if req.auto_skip is not None:
        from optkit.quant.quantizers import quantization_off

        with quantization_off(qmodel):
            float_top1 = top1_of(qmodel)
        skipped, _ = auto_skip(qmodel, ranked, float_top1, req.auto_skip, top1_of)
        result["auto_skipped"] = skipped


def _compare(fused, qmodel, val) -> dict:
    from optkit.quant.compare import fidelity

    f = fidelity(fused, qmodel, val)
    return {
        "float_top1": f.ref_top1,
        "int8_top1": f.top1,
        "top1_agreement": f.top1_agreement,
        "sqnr_db": f.sqnr_db,
        "val_images": f.images,
    }


def _with_config(fused, qmodel, config: QuantConfig):
    """A model quantized with `config` (its final skip list), carrying qmodel's calibrated ranges."""
    from optkit.quant.quantizers import insert_quantizers, quantizers

    final = insert_quantizers(copy.deepcopy(fused), config)
    calibrated = quantizers(qmodel)
    for name, q in quantizers(final).items():
        q.amax = calibrated[name].amax.detach().clone()
    return final.eval()


def onnx_ranges_of(qmodel, imgsz: int, calib: list) -> dict:
    """Ranges of the tensors of qmodel's float ONNX graph on the calibration batches (quant.ranges)."""
    from optkit.quant.quantizers import quantization_off
    from optkit.quant.ranges import tensor_ranges
    from optkit.stages.export import ExportConfig, float_graph

    with quantization_off(qmodel):
        proto, *_ = float_graph(qmodel, ExportConfig(imgsz=imgsz, dynamic=True))  # any batch size
    return tensor_ranges(proto, calib)


def _checkpoint(ckpt, qmodel, config: QuantConfig, ranges: dict, fuse_transform: dict | None):
    from optkit.checkpoint import state_dict_cpu, without_training_state
    from optkit.quant.quantizers import transform_entry

    transforms = list(ckpt.transforms) + ([fuse_transform] if fuse_transform else [])
    transforms.append(transform_entry(qmodel, config, ranges))
    return without_training_state(ckpt, model=state_dict_cpu(qmodel), transforms=transforms)


def _check_rebuilds(ckpt, qmodel, x) -> None:
    """The checkpoint must rebuild (replay + strict load) to the calibrated model's outputs."""
    import torch

    from optkit.checkpoint import build_model
    from optkit.errors import CheckpointError

    with torch.no_grad():
        if not torch.equal(build_model(ckpt)(x), qmodel(x)):
            raise CheckpointError(
                "the quantized checkpoint does not rebuild to the calibrated model (an optkit bug)"
            )


def _args(req: PtqRequest) -> dict:
    return {
        "data": req.data,
        "num_images": req.num_images,
        **req.quant.as_dict(),
        "sensitivity": req.sensitivity,
        "auto_skip": req.auto_skip,
        "act": req.act,
    }
