"""What `ptq-calibrate` quantizes and how: plain data, stored in the checkpoint's transform entry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from optkit.limits import NUM_IMAGES, PERCENTILE, FieldError

# activation calibration (weights always use max); mean-max: NNCF's default (quantizers.MeanMinMax)
METHODS = ("max", "percentile", "entropy", "mse", "mean-max")
TARGETS = ("onnxruntime", "tensorrt", "openvino")  # INT8 ONNX flavours (see optkit.quant.qdq)
# `optkit qat` defaults: a short, gentle fine-tune of an already trained model, distilled from its float self.
# benchmarks/quant.py (demo model, INT8 ONNX top-1 vs fp32 96.81%): 2 epochs on half the data with
# distillation -0.19 pp at lr0 1e-4, -0.81 pp at 5e-4 (which first made the model worse than PTQ);
# 1e-4 without distillation -0.69 pp.
QAT_EPOCHS = 3
QAT_LR0 = 0.0001
QAT_WARMUP = 0.0
QAT_DISTILL = True
MAX_IMAGES = NUM_IMAGES.high  # calibration images: more is never needed and would only cost time


class QuantValueError(FieldError):
    """A QuantConfig value out of its range: `field` (e.g. "method") and `detail` ("'kl' is not known:
    choose one of ..."), so that whoever owns the option words it (the ptq-calibrate flow names the flag,
    `for_option`). Its own message says "quantization <field> <detail>"."""

    def __str__(self) -> str:
        return f"quantization {self.field} {self.detail}"


@dataclass
class QuantConfig:
    # how activation ranges (amax) are chosen. mse: on the demo model INT8 ONNX top-1 96.63% (= ORT's
    # quantize_static) with the best output SQNR (31.2 dB); max 96.63% (28.7 dB), percentile 96.50%,
    # entropy 96.25%
    method: str = "mse"
    percentile: float = 99.99  # for method "percentile": the |x| percentile kept unclipped
    per_channel: bool = True  # weights: one scale per output channel (else one per tensor)
    # after calibration, each layer's bias absorbs the mean error INT8 adds to its output
    # (optkit.quant.bias_correction). Off by default: it helped by 1-2 val images on builtin:shapes
    # models and cost 7 of 359 on the real digits with mobilenet-v2 (output SQNR 23.7 -> 23.3 dB)
    bias_correction: bool = False
    skip: list[str] = field(default_factory=list)  # module names kept in float
    # modules whose every quantizer stays off whatever else is asked: a detector's post-processing (the
    # DFL decode), chosen by optkit.quant.float_scope from what the model's head declares
    float_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantValueError(
                "method", f"{self.method!r} is not known: choose one of {', '.join(METHODS)}"
            )
        if self.percentile not in PERCENTILE:  # NaN fails too
            raise QuantValueError("percentile", PERCENTILE.refusal(self.percentile))

    def validate(self) -> QuantConfig:
        """The values were checked when the config was made (`__post_init__`); kept for callers that
        chain it (the quantize transform's replay)."""
        return self

    def as_dict(self) -> dict:
        return asdict(self)
