"""ModelOpt's fake-quant modules in an optkit model: insert, calibrate, switch off, and rebuild by replay.

`nvidia-modelopt` replaces every Conv/Linear with a Quant* module that has an `input_quantizer` and a
`weight_quantizer` (TensorQuantizer). INT8 here means: weights per output channel (axis 0), activations
per tensor, both symmetric with scale = amax / 127 (ModelOpt's fake quant clamps to [-128, 127]).
ModelOpt also adds `output_quantizer`s, which stay disabled.

Checkpoints never pickle these modules: the transform entry records the QuantConfig (with the modules kept
float: a detector's post-processing, optkit.quant.float_scope) and the shape of every enabled quantizer's
`_amax`; `replay` inserts the same quantizers into a fresh architecture and
creates the `_amax` buffers so that the strict state_dict load fills them (docs/architecture.md, Checkpoints).

ModelOpt is imported inside the functions: its import takes seconds (docs/architecture.md, Heavy imports).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from optkit.errors import CheckpointError, ConfigError, OptkitError
from optkit.limits import FieldError
from optkit.quant.config import QuantConfig
from optkit.transforms import register_transform

if TYPE_CHECKING:
    from torch import nn

KIND = "quantize"  # the checkpoint transform this module owns (optkit.transforms)
VERSION = 3  # its entry layout: see transform_entry (2: the config has `float_modules`, 3: `bias_correction`)
NUM_BITS = 8
HISTOGRAM_METHODS = ("percentile", "entropy", "mse")  # need ModelOpt's histogram calibrator
# entropy/mse try every SEARCH_STRIDE-th of the histogram's 2048 bins as the clipping point: ModelOpt's
# default of every bin took 106 s for the demo model's 33 layers here, stride 8 about an eighth of that
SEARCH_STRIDE = 8
_PER_DIM = ("MaxPool", "AvgPool", "AdaptiveAvgPool", "BatchNorm", "InstanceNorm", "ConvTranspose")
NOT_QUANTIZED = (
    *(f"{kind}{d}d" for kind in _PER_DIM for d in (1, 2, 3)),
    "LayerNorm", "LeakyReLU", "Embedding", "RNN", "LSTM", "GRU",
)  # fmt: skip


class QuantError(OptkitError):
    """Quantization could not be done as asked."""


class UnknownLayerError(FieldError):
    """A `skip` name that no quantizable layer has: `layer`, and the quantizable layers `known` (the first
    six are listed; `hint` ends the list, e.g. where a flow lists them all)."""

    def __init__(self, layer: str, known: list[str], hint: str = ""):
        self.layer, self.known = layer, list(known)
        listed = f"{', '.join(known[:6])}{', …' if len(known) > 6 else ''}"
        super().__init__(
            "skip", f"{layer}: no quantizable layer has that name (Conv/Linear layers: {listed}{hint})"
        )


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules ModelOpt quantizes here: Conv1d/2d/3d and Linear (before insertion)."""
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)]


def insert_quantizers(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Put un-calibrated INT8 quantizers into `model` (in place; returned for chaining).

    Layers named in `config.skip`, and every layer inside the modules of `config.float_modules`, keep
    their quantizers disabled (they stay float). An unknown skip name is an UnknownLayerError that lists
    the quantizable layers.
    """
    known = quantizable_layers(model)
    unknown = [s for s in config.skip if s not in known]
    if unknown:
        raise UnknownLayerError(unknown[0], known)
    modules = dict(model.named_modules())
    absent = [name for name in config.float_modules if name not in modules]
    if absent:
        raise QuantError(f"the model has no module {absent[0]} to keep float")
    if not known:
        raise QuantError("the model has no Conv or Linear layer to quantize")
    mtq = _modelopt()
    with contextlib.redirect_stdout(io.StringIO()):  # ModelOpt prints "Inserted N quantizers"
        mtq.quantize(model, _modelopt_config(config), forward_loop=None)
    return model


def _modelopt_config(config: QuantConfig) -> dict:
    activation = {"num_bits": NUM_BITS, "axis": None}
    if config.method in HISTOGRAM_METHODS:
        activation["calibrator"] = "histogram"
    rules = [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {"num_bits": NUM_BITS, "axis": 0 if config.per_channel else None},
        },
        {"quantizer_name": "*input_quantizer", "cfg": activation},
    ]
    # ModelOpt also puts quantizers into pooling, norm, recurrent and transposed-conv modules; INT8 here is
    # Conv/Linear (what the QDQ graphs place), so those stay off
    rules += [{"quantizer_name": "*", "parent_class": f"nn.{cls}", "enable": False} for cls in NOT_QUANTIZED]
    # ModelOpt matches quantizer names with fnmatch; the exact name of each skipped layer's quantizers
    rules += [{"quantizer_name": f"{name}.*_quantizer", "enable": False} for name in config.skip]
    # and every quantizer anywhere inside a module kept float (e.g. `model.22.dfl.*`: its fixed conv)
    rules += [{"quantizer_name": f"{name}.*", "enable": False} for name in config.float_modules]
    return {"quant_cfg": rules, "algorithm": None}  # None: insert only; optkit calibrates (below)


def quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """The enabled TensorQuantizers by name (`<layer>.input_quantizer`, `<layer>.weight_quantizer`)."""
    return {n: m for n, m in model.named_modules() if _is_quantizer(m) and m.is_enabled}


def _is_quantizer(module: nn.Module) -> bool:
    return type(module).__name__ == "TensorQuantizer"


def quantized_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weights are quantized, in model order."""
    suffix = ".weight_quantizer"
    return [n[: -len(suffix)] for n in quantizers(model) if n.endswith(suffix)]


def is_quantized(model: nn.Module) -> bool:
    return any(_is_quantizer(m) for m in model.modules())


def calibrate(
    model: nn.Module, forward_loop: Callable[[nn.Module], None], method: str, percentile: float = 99.99
) -> None:
    """Collect statistics with quantization off, then load every quantizer's amax (in place).

    Weights: max |w| per channel. Activations: `method` over what `forward_loop` feeds the model
    (max, the histogram's percentile / entropy / mse choice, or mean-max: MeanMinMax).
    """
    import torch

    active = quantizers(model)
    for q in active.values():
        q.disable_quant()
        q.enable_calib()
    per_image = {n: MeanMinMax() for n in active if method == "mean-max" and n.endswith(".input_quantizer")}
    hooks = [active[n].register_forward_pre_hook(stats) for n, stats in per_image.items()]
    try:
        with torch.no_grad():
            forward_loop(model)
    finally:
        for hook in hooks:
            hook.remove()
    for name, q in active.items():
        try:
            if name in per_image:
                q.amax = per_image[name].amax()
            elif type(q._calibrator).__name__ != "HistogramCalibrator":
                q.load_calib_amax()
            elif method == "mse":
                q.amax = mse_amax(q._calibrator._calib_hist, q._calibrator._calib_bin_edges)
            else:
                kwargs = {"percentile": percentile} if method == "percentile" else {"stride": SEARCH_STRIDE}
                q.load_calib_amax(method, **kwargs)
        except RuntimeError as e:  # the calibrator saw no tensor: the layer never ran
            raise QuantError(f"{name} saw no data during calibration ({str(e).splitlines()[0]})") from None
        q.enable_quant()
        q.disable_calib()
    _check_amax(active)


class MeanMinMax:
    """A forward pre-hook that adds up each image's min and max of a quantizer's input; `amax` is the
    larger of -mean(min) and mean(max) over the images: NNCF's default range for per-tensor activations
    (its MEAN_MINMAX set), made symmetric as optkit's INT8 activations are. One outlier image moves it by
    1/N of its excess rather than setting it, as the plain max lets it."""

    def __init__(self) -> None:
        self.low = self.high = 0.0  # sums over images
        self.images = 0

    def __call__(self, module, args) -> None:
        x = args[0].detach().flatten(1).double()  # one row per image
        self.low += float(x.amin(dim=1).sum())
        self.high += float(x.amax(dim=1).sum())
        self.images += x.shape[0]

    def amax(self):
        import torch

        if not self.images:
            raise RuntimeError("no tensor was seen")
        return torch.tensor(max(-self.low, self.high) / self.images, dtype=torch.float32)


def mse_amax(hist, edges, start_bin: int = 128):
    """The clipping point among the histogram's bin centres (from `start_bin`, every SEARCH_STRIDE-th)
    that minimizes the squared INT8 rounding + clipping error of the histogram of |x|.

    Done here because ModelOpt 0.47's own "mse" search calls its fake-quant function with an outdated
    argument order and returns nonsense (measured: the demo model fell to chance accuracy).
    """
    import torch

    if hist is None:
        raise QuantError("the mse calibrator saw no data")
    counts = torch.as_tensor(hist, dtype=torch.float64)
    edges = torch.as_tensor(edges, dtype=torch.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    candidates = centers[start_bin::SEARCH_STRIDE] if len(centers) > start_bin else centers
    scale = (candidates / 127).clamp_min(1e-12)[:, None]  # (K, 1): one row per candidate amax
    rounded = (centers[None, :] / scale).round().clamp(-128, 127) * scale
    errors = ((rounded - centers[None, :]) ** 2 * counts[None, :]).sum(dim=1)
    return candidates[errors.argmin()].float()


def _check_amax(active: dict) -> None:
    import torch

    for name, q in active.items():
        amax = q.amax
        if amax is None or not torch.isfinite(amax).all():
            raise QuantError(f"calibration gave {name} no finite range (amax={amax})")


@contextlib.contextmanager
def quantization_off(model: nn.Module, keep: str | None = None) -> Iterator[nn.Module]:
    """Within the block, the model computes in float, except the quantizers of layer `keep` (if given)."""
    active = quantizers(model)
    try:
        for name, q in active.items():
            if keep is None or name.rsplit(".", 1)[0] != keep:
                q.disable()
        yield model
    finally:
        for q in active.values():
            q.enable()


def transform_entry(model: nn.Module, config: QuantConfig, ranges: dict | None = None) -> dict:
    """The checkpoint's record of the quantization: config, amax shapes, and ONNX activation ranges."""
    return {
        "kind": KIND,
        "version": VERSION,
        "config": config.as_dict(),
        "amax_shapes": {n: list(q.amax.shape) for n, q in quantizers(model).items()},
        "onnx_ranges": ranges or {},
    }


def replay(model: nn.Module, entry: dict) -> nn.Module:
    """Checkpoint rebuild: the same quantizers, with `_amax` buffers of the recorded shapes (filled by
    the strict state_dict load that follows)."""
    import torch

    try:
        config = QuantConfig(**entry["config"]).validate()
        shapes = {str(k): [int(d) for d in v] for k, v in entry["amax_shapes"].items()}
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"the checkpoint's quantize transform is malformed ({e})") from None
    insert_quantizers(model, config)
    active = quantizers(model)
    if set(active) != set(shapes):
        missing = sorted(set(shapes) - set(active)) or ["-"]
        raise CheckpointError(
            f"the checkpoint's quantizers do not match this architecture ({len(shapes)} recorded, "
            f"{len(active)} here; e.g. {missing[0]})"
        )
    for name, q in active.items():
        q.amax = torch.ones(shapes[name])  # placeholder of the right shape; the state_dict sets it
    return model


def upgrade(entry: dict, version: int) -> dict:
    """A version-1 entry (written before `float_modules` existed) kept nothing float beyond `skip`; entries
    before version 3 corrected no biases (the corrected biases live in the weights: replay needs nothing)."""
    config = entry.get("config")
    if isinstance(config, dict):  # anything else is refused by replay as malformed
        config = {"float_modules": [], "bias_correction": False, **config}
    return {**entry, "version": VERSION, "config": config}


register_transform(KIND, VERSION, replay, upgrade=upgrade)


def onnx_ranges(entry: dict) -> dict[str, tuple[float, float]]:
    return {str(k): (float(v[0]), float(v[1])) for k, v in (entry.get("onnx_ranges") or {}).items()}


def quantize_entry(transforms: list[dict]) -> dict | None:
    """The quantize transform of a checkpoint's transform list, or None for a float checkpoint."""
    found = [t for t in transforms if t.get("kind") == KIND]
    return found[-1] if found else None


def _modelopt():
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as e:  # an install without the quantization extra
        raise QuantError(
            f"quantization needs nvidia-modelopt, which could not be imported ({e}); "
            "install it with: pip install 'optkit[quant]'"
        ) from None
    return mtq
