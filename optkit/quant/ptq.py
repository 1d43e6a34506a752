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
# Calibrating on fewer images than this gets a warning. An activation's calibrated range is about the
# largest value seen over the calibration images, and a new image exceeds the largest of n exchangeable
# ones with probability 1/(n+1): under 32 images, more than 3% of the images met in use (with 1 image,
# half of them) push some activation past its range and are clipped; the histogram methods (percentile,
# entropy, mse) also see too little of the tails to place a clipping point. 32 is one default batch.
FEW_CALIBRATION_IMAGES = 32


@dataclass
class PtqRequest:
    weights: str
    data: str
    num_images: int = 512
    val_images: int | None = None  # val images the float/INT8 comparison runs on; None: the whole split
    quant: QuantConfig = field(default_factory=QuantConfig)
    sensitivity: bool = False
    sensitivity_metric: str = "sqnr"
    auto_skip: float | None = None  # max top-1 drop in percentage points
    act: str | None = None  # swap the architecture's activation (e.g. silu -> relu) before quantizing
    batch_size: int = 32
    output: str | None = None
    trust: bool = False  # foreign pickled checkpoints (optkit.workflows.inputs.open_model)
    code_dir: str | None = None
    model_name: str | None = None  # a plain state_dict file: the zoo model it belongs to

    def validate(self) -> PtqRequest:
        from optkit.quant.sensitivity import METRICS

        self.quant.validate()
        check_num_images(self.num_images)
        if self.val_images is not None:
            check_num_images(self.val_images, "--val-images")
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


def run_ptq(req: PtqRequest, progress=None) -> dict:
    """`progress`: an optkit.report.progress display (default: quiet). Every input is checked (the
    file, the data, --act, --skip, ModelOpt installed) before the first step that prints a line."""
    from optkit.checkpoint import build_model, save_checkpoint
    from optkit.quant.quantizers import insert_quantizers, quantized_layers
    from optkit.report.progress import Quiet
    from optkit.workflows.inputs import open_model
    from optkit.workflows.outputs import file_size, stage_output

    progress = progress or Quiet()
    req.validate()
    target = stage_output(req.weights, "int8", req.output)
    src = open_model(
        req.weights,
        command="ptq-calibrate",
        trust=req.trust,
        code_dir=req.code_dir,
        model_name=req.model_name,
    )
    data = _dataset(src, req)
    result: dict = {"source": req.weights, "output": str(target), "method": req.quant.method, "act": req.act}
    with progress.step("building the model and inserting INT8 quantizers (ModelOpt)", line=False):
        model, ckpt, original = _float_model(src, req)
        fused, fuse_transform = _fused(model, src.imgsz, foreign=src.foreign is not None)
        qmodel = insert_quantizers(copy.deepcopy(fused), req.quant)  # checks --skip
    images = _images(data, req, progress)
    result["num_images"] = sum(len(b) for b in images.calib)
    _warn_few_images(result, data.train_images, req, progress)
    if original is not None:
        with progress.step(f"top-1 before --act {req.act} on {data.val_images} val images"):
            result["original_top1"] = _top1(build_model(original), images.val)
    result["calibration_s"] = _calibrate(qmodel, req.quant, images.calib, progress)
    if req.sensitivity or req.auto_skip is not None:
        _sensitivity(qmodel, images, req, result, progress)
    with progress.step(f"comparing float and INT8 on {data.val_images} val images"):
        compared = _compare(fused, qmodel, images)
    result.update(compared, skipped=list(req.quant.skip) + result.get("auto_skipped", []))
    final_config = QuantConfig(**{**req.quant.as_dict(), "skip": result["skipped"]})
    qmodel = _with_config(fused, qmodel, final_config)
    metrics = {k: result[k] for k in ("float_top1", "int8_top1", "top1_agreement", "sqnr_db")}
    if ckpt is None:
        _save_foreign(src, fused, qmodel, target, _args(req), metrics)
    else:
        t0 = time.perf_counter()
        with progress.step(f"measuring ONNX activation ranges on {result['num_images']} images"):
            ranges = onnx_ranges_of(qmodel, src.imgsz, images.calib)
        result["ranges_s"] = time.perf_counter() - t0
        new = _checkpoint(ckpt, qmodel, final_config, ranges, fuse_transform)
        new.add_lineage("ptq-calibrate", {**_args(req), "source": req.weights}, metrics)
        _check_rebuilds(new, qmodel, images.calib[0])
        save_checkpoint(new, target)
    result.update(
        quantized_layers=len(quantized_layers(qmodel)),
        bytes_before=file_size(req.weights),
        bytes_after=file_size(target),
    )
    return result


def _save_foreign(src, fused, qmodel, target, args: dict, metrics: dict) -> None:
    """A foreign file keeps its layout with the fused float module as `model` (its own tools still load
    it), plus ModelOpt's save format beside it: `modelopt_state` (the quantizer recipe) and
    `modelopt_weights` (state_dict with every amax). ModelOpt's quantized classes cannot be pickled;
    `mto.restore_from_modelopt_state(model, obj["modelopt_state"])` then
    `model.load_state_dict(obj["modelopt_weights"])` rebuild the quantized module."""
    import modelopt.torch.opt as mto

    from optkit.checkpoint import state_dict_cpu
    from optkit.foreign.checkpoint import save_foreign

    obj = src.foreign.with_module(fused)
    if not isinstance(obj, dict):
        raise ConfigError(f"{src.path} is a bare pickled module: there is no place to store the quantizers")
    obj["modelopt_state"] = mto.modelopt_state(qmodel)
    obj["modelopt_weights"] = state_dict_cpu(qmodel)
    save_foreign(src.with_lineage(obj, "ptq-calibrate", args, metrics), target)


@dataclass
class _Data:
    """The dataset, its two splits scanned (so a split without images is refused before any work)."""

    spec: object  # optkit.data.DataSpec
    names: list[str]  # the class folders to read
    preprocess: dict  # {"mean", "std"} the model expects
    imgsz: int
    classify: bool  # labels mean the model's classes (top-1 is measured)
    train_images: int  # in the train split (calibration images are taken from it)
    val_images: int  # compared on: the val split, or --val-images of it


@dataclass
class _Images:
    calib: list  # image batches from the train split
    val: list  # (images, labels) batches of the whole val split
    classify: bool  # labels mean the model's classes (top-1 is measured)


def _dataset(src, req: PtqRequest) -> _Data:
    """The data, checked against the model. A model that is not a classifier (a foreign detection
    model) is calibrated and compared on the images alone (no top-1)."""
    from optkit.data import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, resolve_data
    from optkit.measure.validate import check_classes

    spec = resolve_data(req.data)
    classify = src.task == "classify"
    if src.kind == "state_dict" and len(spec.names) == src.num_classes:
        src.names = src.ckpt.names = list(spec.names)  # a state_dict has no class names: the data's
    if classify:
        check_classes(spec, src.names)
    elif req.sensitivity_metric == "top1" or req.auto_skip is not None:
        raise ConfigError(
            f"{req.weights} is a {src.task} model: top-1 (--sensitivity-metric top1, --auto-skip) "
            "needs a classifier; the SQNR sensitivity works for any model"
        )
    names = list(src.names) if classify else list(spec.names)  # the folders to read
    pre = src.preprocess or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    # scanned now (file names only) so that a split without images is refused before any work
    train = len(ImageFolder(spec.train_dir, None, classes=names))
    val = len(ImageFolder(spec.val_dir, None, classes=names))
    return _Data(spec, names, pre, src.imgsz, classify, train, min(val, req.val_images or val))


def _images(data: _Data, req: PtqRequest, progress) -> _Images:
    """The calibration and val images, preprocessed as the model expects, decoded once (they are run
    many times)."""
    args = (data.spec, data.names, data.imgsz, data.preprocess)
    calib = _calibration_batches(*args, req, progress)
    return _Images(calib, _val_batches(*args, req.val_images, progress), data.classify)


def _warn_few_images(result: dict, available: int, req: PtqRequest, progress) -> None:
    """A warning (stderr, and `notes` in the result) when calibration rests on too few images."""
    n = result["num_images"]
    if n >= FEW_CALIBRATION_IMAGES:
        return
    why = f"--num-images {req.num_images}" if n == req.num_images else f"the train split has only {available}"
    message = (
        f"calibrating on {n} image{'s' if n > 1 else ''} ({why}): ranges from fewer than "
        f"{FEW_CALIBRATION_IMAGES} images clip many other images' activations; use a few hundred "
        "(default 512)"
    )
    result.setdefault("notes", []).append(message)
    progress.warn(message)


def _float_model(src, req: PtqRequest):
    """(the float model to quantize, the optkit checkpoint it comes from or None for a foreign module,
    the checkpoint before --act swapped its activations or None)."""
    from optkit.checkpoint import build_model
    from optkit.quant.quantizers import is_quantized, quantize_entry

    ckpt, original = src.ckpt, None
    if ckpt is not None and quantize_entry(ckpt.transforms) is not None:
        raise ConfigError(f"{req.weights} is already quantized (ptq-calibrate takes a float checkpoint)")
    if req.act:
        if ckpt is None:
            raise ConfigError(
                "--act rebuilds the architecture with another activation: it needs an optkit checkpoint"
            )
        original, ckpt = ckpt, _with_activation(ckpt, req.act)
    model = build_model(ckpt) if ckpt is not None else src.model()
    if ckpt is None and is_quantized(model):
        raise ConfigError(f"{req.weights} is already quantized (ptq-calibrate takes a float model)")
    return model, ckpt, original


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


def _fused(model, imgsz: int, foreign: bool = False):
    from optkit.stages.fuse import FuseConfig, fuse

    fused, report = fuse(model, FuseConfig(check=True, imgsz=imgsz))
    if foreign:  # YOLO Conv blocks: no .bn and forward_fuse, as their own fuse() leaves them
        from optkit.foreign.fuse import yolo_fused_layout_

        yolo_fused_layout_(fused, report.fused)
    return fused, ({"kind": "fuse", "fused": report.fused} if report.fused else None)


def _calibration_batches(spec, names: list[str], imgsz: int, preprocess: dict, req: PtqRequest, progress):
    """`num_images` images spread evenly over the train split, in batches."""
    from optkit.data import ImageFolder
    from optkit.data.subset import evenly_spaced, image_batches

    dataset = ImageFolder(spec.train_dir, _val_transform(imgsz, preprocess), classes=names)
    indices = evenly_spaced(len(dataset), req.num_images)
    batches = []
    with progress.step(f"reading {len(indices)} calibration images", total=len(indices)) as step:
        for x in image_batches(dataset, indices, req.batch_size):
            batches.append(x)
            step.advance(len(x))
    return batches


def _val_batches(spec, names: list[str], imgsz: int, preprocess: dict, limit: int | None, progress=None):
    """The val split (or `limit` images spread evenly over it, so every class of the class-sorted
    folder is in) as (images, labels) batches."""
    import torch

    from optkit.data import ImageFolder
    from optkit.data.subset import evenly_spaced
    from optkit.report.progress import Quiet

    dataset = ImageFolder(spec.val_dir, _val_transform(imgsz, preprocess), classes=names)
    indices = evenly_spaced(len(dataset), limit or len(dataset))
    batches = []
    with (progress or Quiet()).step(f"reading {len(indices)} val images", total=len(indices)) as step:
        for i in range(0, len(indices), 128):
            items = [dataset[j] for j in indices[i : i + 128]]
            batches.append((torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])))
            step.advance(len(items))
    return batches


def _val_transform(imgsz: int, preprocess: dict):
    from optkit.data import ValTransform

    return ValTransform(imgsz, mean=preprocess["mean"], std=preprocess["std"])


def _calibrate(qmodel, config: QuantConfig, calib: list, progress) -> float:
    """Calibrate qmodel's quantizers in place on the batches; returns the seconds it took."""
    from optkit.quant.quantizers import calibrate

    n = sum(len(x) for x in calib)
    t0 = time.perf_counter()
    with progress.step(f"calibrating ({config.method}) on {n} images", total=n) as step:

        def forward_loop(model):
            for x in calib:
                model(x)
                step.advance(len(x))

        calibrate(qmodel, forward_loop, config.method, config.percentile)
    qmodel.eval()
    return time.perf_counter() - t0


def _sensitivity(qmodel, images: _Images, req: PtqRequest, result: dict, progress) -> None:
    from optkit.quant.quantizers import quantized_layers
    from optkit.quant.sensitivity import auto_skip, sensitivity

    def top1_of(model):
        return _top1(model, images.val)

    n, few = 0, []
    for x in images.calib:  # the first SENSITIVITY_IMAGES calibration images
        few.append(x[: SENSITIVITY_IMAGES - n])
        n += len(few[-1])
        if n >= SENSITIVITY_IMAGES:
            break
    t0 = time.perf_counter()
    layers = len(quantized_layers(qmodel))
    with progress.step(f"per-layer sensitivity ({req.sensitivity_metric}) of {layers} layers"):
        ranked = sensitivity(qmodel, few, req.sensitivity_metric, top1_of)
    result["sensitivity"] = [r.as_dict() for r in ranked]
    result["sensitivity_s"] = time.perf_counter() - t0
    if req.auto_skip is not None:
        from optkit.quant.quantizers import quantization_off

        with progress.step(f"--auto-skip: keeping layers float until top-1 drops <= {req.auto_skip} pp"):
            with quantization_off(qmodel):
                float_top1 = top1_of(qmodel)
            skipped, _ = auto_skip(qmodel, ranked, float_top1, req.auto_skip, top1_of)
        result["auto_skipped"] = skipped


def _compare(fused, qmodel, images: _Images) -> dict:
    from optkit.quant.compare import fidelity

    f = fidelity(fused, qmodel, images.val, classify=images.classify)
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
