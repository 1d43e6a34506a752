"""What `ptq-calibrate` quantizes and how: plain data, stored in the checkpoint's transform entry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from optkit.errors import ConfigError

METHODS = ("max", "percentile", "entropy", "mse")  # activation calibration; weights always use max
TARGETS = ("onnxruntime", "tensorrt")  # INT8 ONNX flavours (see optkit.quant.qdq)
# `optkit qat` defaults: a short, gentle fine-tune of an already trained model, distilled from its float self.
# benchmarks/quant.py (demo model, INT8 ONNX top-1 vs fp32 96.81%): 2 epochs on half the data with
# distillation -0.19 pp at lr0 1e-4, -0.81 pp at 5e-4 (which first made the model worse than PTQ);
# 1e-4 without distillation -0.69 pp.
QAT_EPOCHS = 3
QAT_LR0 = 0.0001
QAT_WARMUP = 0.0
QAT_DISTILL = True
MAX_IMAGES = 100_000  # calibration images: more is never needed and would only cost time


@dataclass
class QuantConfig:
    # how activation ranges (amax) are chosen. mse: on the demo model INT8 ONNX top-1 96.63% (= ORT's
    # quantize_static) with the best output SQNR (31.2 dB); max 96.63% (28.7 dB), percentile 96.50%,
    # entropy 96.25%
    method: str = "mse"
    percentile: float = 99.99  # for method "percentile": the |x| percentile kept unclipped
    per_channel: bool = True  # weights: one scale per output channel (else one per tensor)
    skip: list[str] = field(default_factory=list)  # module names kept in float

    def validate(self) -> QuantConfig:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} is not known: choose one of {', '.join(METHODS)}")
        if not 0 < self.percentile <= 100:  # `not`: NaN fails too
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def check_num_images(n: int, option: str = "--num-images") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise ConfigError(f"{option} must be in [1, {MAX_IMAGES}], got {n!r}")
    return n
