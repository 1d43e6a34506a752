"""Input-size rules shared by every command that runs a model."""

from __future__ import annotations

from optkit.errors import ModelError
from optkit.limits import IMGSZ, FieldError

MAX_IMGSZ = IMGSZ.high  # pixels; larger inputs are refused before anything is allocated


class ImgszError(FieldError, ModelError):
    """An input side the model cannot take: `field` (imgsz, or the option that set it) and `detail`."""

    def for_option(self, option: str) -> ImgszError:
        return ImgszError(option, self.detail)


def check_imgsz(imgsz: int, stride: int = 32, name: str = "imgsz") -> int:
    """Return imgsz if the model can take it (a positive multiple of its stride), else an ImgszError
    naming `name` (a flow passes its flag)."""
    if not isinstance(imgsz, int) or imgsz < stride or imgsz > MAX_IMGSZ:
        raise ImgszError(
            name, f"must be a multiple of {stride} between {stride} and {MAX_IMGSZ}, got {imgsz}"
        )
    if imgsz % stride:
        lower, upper = imgsz // stride * stride, (imgsz // stride + 1) * stride
        raise ImgszError(
            name, f"{imgsz} is not a multiple of the model's stride {stride}; use {lower or upper} or {upper}"
        )
    return imgsz


def model_stride(model, default: int = 32) -> int:
    """A model's total downsampling in pixels. optkit models carry an int; YOLO detection models a
    tensor with one stride per output level (8, 16, 32): input sides must be multiples of the largest."""
    stride = getattr(model, "stride", None)
    if stride is None:
        return default
    if hasattr(stride, "numel"):  # a tensor
        return int(stride.max().item()) if stride.numel() else default
    if isinstance(stride, (list, tuple)):
        return int(max(stride)) if stride else default
    return int(stride)
