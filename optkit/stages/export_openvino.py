"""The OpenVINO half of `optkit export --format openvino`: an ONNX file optkit exported (and checked against
PyTorch) becomes an OpenVINO IR folder, checked against that ONNX file before it appears.

The IR is converted from the ONNX file with `openvino.convert_model` (optkit.ovrt.write_ir: weights kept
float32, optkit's metadata in its rt_info) into a hidden folder beside the target. It is compiled with
INFERENCE_PRECISION_HINT f32 (the CPU's default may be bf16, which is a precision choice, not an export
error) and run on the same inputs as ONNX Runtime runs the ONNX file: a random batch, and the real images
when there are some. Every output's max |Δ| relative to the ONNX output's largest magnitude must stay within
the tolerance the ONNX export used; then the folder takes the target's name (an earlier IR there is
replaced), else nothing is written. For an INT8 graph the report counts the convolutions OpenVINO runs in
8 bits (its runtime model's `runtimePrecision`).

A graph ending in NMS (`export --nms`: ONNX NonMaxSuppression, which OpenVINO converts) is compared by
detections instead, image by image: the same count, each of ONNX Runtime's matched by one of OpenVINO's
of the same class with IoU >= NMS_MIN_IOU (optkit.stages.export's rule for the ONNX file's own NMS check),
the largest |score Δ| of the pairs within the tolerance (scores lie in [0, 1]). Rows are not compared in
place: detections of equal score may come out in another order.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from optkit.errors import OptkitError

CHECK_PRECISION = "f32"  # the parity check's inference precision (see above)


class IrParityError(OptkitError):
    """The IR's outputs differ from the ONNX file's beyond the tolerance."""


@dataclass
class IrReport:
    folder: str
    xml: str
    bytes: int  # .xml + .bin
    max_abs: float
    max_rel: float
    atol: float
    inputs: list[str] = field(default_factory=list)  # what the check ran on ("random 1x3x64x64", ...)
    int8_convs: int | None = None  # convolutions OpenVINO runs in 8 bits (INT8 graphs)
    convs: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def onnx_to_ir(
    onnx_path, folder, atol: float, images=None, int8: bool = False, images_source: str | None = None
) -> IrReport:
    """Convert `onnx_path` into the IR folder `folder`, checked against the ONNX file on a random batch
    and `images` (batches of float tensors, as the model reads them; `images_source` names them, "val
    images" by default) first."""
    from optkit.onnxrt import read_metadata
    from optkit.ovrt import write_ir

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        xml = write_ir(onnx_path, staging / folder.name, read_metadata(onnx_path))
        report = _compare(xml, onnx_path, atol, images, images_source or "val images")
        if int8:
            report.int8_convs, report.convs = int8_convolutions(xml)
        if folder.exists():
            shutil.rmtree(folder)
        (staging / folder.name).rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    final = folder / xml.name
    report.folder, report.xml = str(folder), str(final)
    report.bytes = final.stat().st_size + final.with_suffix(".bin").stat().st_size
    return report


def _compare(xml: Path, onnx_path, atol: float, images, images_source: str) -> IrReport:
    import torch

    from optkit.onnxrt import OrtModel, read_metadata
    from optkit.ovrt import OvModel
    from optkit.stages.onnx_nms import NMS_KEY

    ort, ov = OrtModel(onnx_path), OvModel(xml, precision=CHECK_PRECISION)
    size = ov.fixed_size() or ort.fixed_size()
    imgsz = size[0] if size else _imgsz_of(ov)
    batches = [
        (
            "random",
            torch.rand(ort.fixed_batch or 1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)),
        )
    ]
    batches += [(images_source, x) for x in (images or [])]
    compare = _detections_delta if NMS_KEY in read_metadata(onnx_path) else _outputs_delta
    max_abs = max_rel = 0.0
    seen = []
    for what, x in batches:
        diff, rel = compare(ort.run_all(x), ov.run_all(x))
        max_abs, max_rel = max(max_abs, diff), max(max_rel, rel)
        seen.append(f"{what} {'x'.join(str(d) for d in x.shape)}")
    if max_rel > atol:
        raise IrParityError(
            f"the OpenVINO IR differs from the ONNX file by {max_rel:.3g} of the output scale (max |Δ| "
            f"{max_abs:.3g}), over the tolerance {atol:g}; nothing written"
        )
    return IrReport("", "", 0, max_abs, max_rel, atol, _merged(seen))


def _outputs_delta(refs: list, outs: list) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / the reference output's largest magnitude) over every output."""
    max_abs = max_rel = 0.0
    for ref, out in zip(refs, outs, strict=True):
        diff = (ref - out).abs().max().item()
        max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / max(ref.abs().max().item(), 1e-12))
    return max_abs, max_rel


def _detections_delta(refs: list, outs: list) -> tuple[float, float]:
    """(max |score Δ|, the same: scores' scale is 1) of NMS outputs [B, max_det, 6] matched image by image
    (see the module docstring); a count or a detection that differs is an IrParityError."""
    from optkit.stages.export import NMS_MIN_IOU, _match

    worst = 0.0
    for i, (ref, out) in enumerate(zip(refs[0], outs[0], strict=True)):
        ref, out = ref[ref[:, 4] > 0], out[out[:, 4] > 0]  # score 0: padding
        matched, _, score_delta = _match(ref, out)
        if not len(ref) == len(out) == matched:
            raise IrParityError(
                f"the OpenVINO IR's NMS kept {len(out)} detections in image {i} where ONNX Runtime kept "
                f"{len(ref)}, {matched} of them matched (same class, IoU >= {NMS_MIN_IOU}); nothing written"
            )
        worst = max(worst, score_delta)
    return worst, worst


def _imgsz_of(ov) -> int:
    imgsz = ov.metadata.get("imgsz")
    return imgsz if isinstance(imgsz, int) and imgsz > 0 else 224


def _merged(seen: list[str]) -> list[str]:
    """["random 1x3x64x64", "val images 32x3x64x64", ...] with repeats of a kind counted once."""
    kinds: dict[str, int] = {}
    for entry in seen:
        what, shape = entry.rsplit(" ", 1)
        kinds[what] = kinds.get(what, 0) + int(shape.split("x")[0])
    return [f"{what}: {n} image(s)" for what, n in kinds.items()]


def int8_convolutions(xml) -> tuple[int, int]:
    """(convolutions OpenVINO runs in int8/uint8, all convolutions) of the compiled IR."""
    from optkit.ovrt import OvModel

    runtime = OvModel(xml).compiled.get_runtime_model()
    int8 = total = 0
    for op in runtime.get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) != "Convolution":
            continue
        total += 1
        int8 += info["runtimePrecision"].astype(str) in ("i8", "u8")
    return int8, total
