"""OpenVINO as optkit's second CPU runtime: write an IR (.xml + .bin) from optkit's own ONNX with optkit's
metadata in its rt_info, find and read one back, and run it as if it were an eval-mode torch model (as
optkit.onnxrt.OrtModel runs ONNX Runtime), so `optkit.measure` works on it.

An IR is a folder holding one `<name>.xml` and its `<name>.bin` (what `optkit export --format openvino -o
DIR` writes, as OpenVINO's and Ultralytics' exporters lay it out), or the `.xml` itself. optkit's metadata
(`names`, `imgsz`, `stride`, `task`, `arch`, `preprocess`, ... : optkit.onnxrt's keys and encodings) lives
under `rt_info["optkit"]`, all values strings.

OpenVINO is an optional extra (`pip install 'optkit[openvino]'`); without it these functions raise one
line naming the extra. openvino, numpy and torch are imported inside the functions (docs/architecture.md,
Heavy imports).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import CheckpointError, ConfigError
from optkit.onnxrt import INT_KEYS, JSON_KEYS

if TYPE_CHECKING:
    import openvino
    import torch

RT_INFO_SECTION = "optkit"  # rt_info["optkit"][key] holds optkit's metadata
PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values (None: the CPU's default)
MISSING = "OpenVINO is not installed: pip install 'optkit[openvino]'"


class IrFileError(CheckpointError):
    """A path is not an OpenVINO IR optkit can use."""


def openvino_module():
    """The `openvino` package, or one line naming the extra."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(MISSING) from None
    return openvino


def is_ir(path: str | os.PathLike) -> bool:
    """Whether `path` names an OpenVINO IR: an .xml file, or a folder holding .xml files."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("*.xml"))
    return path.suffix.lower() == ".xml"


def find_ir(path: str | os.PathLike) -> Path:
    """The .xml of the IR at `path` (the file, or the one .xml in the folder), its .bin beside it; one
    line naming what is wrong otherwise."""
    path = Path(path)
    if not path.exists():
        raise IrFileError(f"{path}: no such file or folder")
    if path.is_dir():
        found = sorted(path.glob("*.xml"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found[:4]) or "none"
            raise IrFileError(f"{path}: expected one .xml (OpenVINO IR) here, found {len(found)}: {listed}")
        path = found[0]
    if not path.with_suffix(".bin").is_file():
        raise IrFileError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing beside it")
    return path


def read_ir(path: str | os.PathLike) -> tuple[openvino.Model, dict[str, Any]]:
    """(the OpenVINO model, optkit's metadata from its rt_info: JSON keys decoded, ints parsed)."""
    ov = openvino_module()
    xml = find_ir(path)
    try:
        model = ov.Core().read_model(str(xml))
    except RuntimeError as e:
        raise IrFileError(f"{xml}: OpenVINO cannot read it ({_first_line(e)})") from None
    return model, _metadata(model)


def _metadata(model) -> dict[str, Any]:
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    meta: dict[str, Any] = {}
    for key, value in model.get_rt_info()[RT_INFO_SECTION].items():
        text = value.astype(str) if hasattr(value, "astype") else str(value)
        try:
            meta[key] = json.loads(text) if key in JSON_KEYS else int(text) if key in INT_KEYS else text
        except ValueError:
            meta[key] = text  # the caller decides whether a value that does not decode is an error
    return meta


def write_ir(onnx_path: str | os.PathLike, folder: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Convert an ONNX file to an IR in `folder` (<folder name>.xml + .bin, weights kept float32), with
    `metadata` in its rt_info; the folder appears whole or not at all (written beside it, then renamed).
    Returns the .xml path."""
    model = openvino_module().convert_model(str(onnx_path))
    return save_ir(model, folder, metadata)


def save_ir(model, folder: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Save an OpenVINO model as <folder name>.xml + .bin in `folder` (weights kept float32), `metadata`
    added to its rt_info (JSON_KEYS as JSON, the rest as text); the folder appears whole or not at all
    (written beside it, then renamed over an earlier one). Returns the .xml path."""
    ov = openvino_module()
    folder = Path(folder)
    for key, value in metadata.items():
        text = json.dumps(value) if key in JSON_KEYS else str(value)
        model.set_rt_info(text, [RT_INFO_SECTION, key])
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        ov.save_model(model, str(staging / f"{folder.name}.xml"), compress_to_fp16=False)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / f"{folder.name}.xml"


def compile_ir(model, threads: int | None = None, precision: str | None = None, perf: bool = False):
    """The model compiled for the CPU with the latency hint; `threads`: inference threads (None:
    OpenVINO's default); `precision`: INFERENCE_PRECISION_HINT (None: the CPU's default, bf16 where the
    CPU has it); `perf`: performance counters on (per-node times, at some cost)."""
    ov = openvino_module()
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if perf:
        config["PERF_COUNT"] = True
    return ov.Core().compile_model(model, "CPU", config)


class OvModel:
    """An IR run by OpenVINO, called like an eval-mode torch model: a float tensor batch (N, 3, H, W) in,
    float32 outputs out, on the CPU. A graph with a fixed batch size B is run B images at a time (the last
    chunk zero-padded, the padding's outputs dropped). `.eval()`, `.train()` and `.to()` return self."""

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str | None = None):
        model, self.metadata = read_ir(path)
        self.path = find_ir(path)
        if len(model.inputs) != 1 or not model.outputs:
            raise IrFileError(
                f"{self.path} has {len(model.inputs)} inputs; optkit runs image models with one input"
            )
        self.model, self.threads, self.precision = model, threads, precision
        dims = _static_dims(model.inputs[0].get_partial_shape())
        self.fixed_batch = dims[0] if dims else None
        self._fixed_size = (dims[2], dims[3]) if len(dims) == 4 and None not in dims[2:] else None
        self.compiled = compile_ir(model, threads, precision)
        self.request = self.compiled.create_infer_request()

    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) when the model takes only one input size, else None."""
        return self._fixed_size

    def check_input_size(self, imgsz: int) -> None:
        from optkit.onnxrt import check_input_size

        check_input_size(self.path, self._fixed_size, imgsz)

    def runtime_precision(self) -> str:
        """The precision OpenVINO runs float layers in ("f32", "bf16", ...): the hint or the CPU's default."""
        value = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def timed_call(self, batch: int, imgsz: int):
        """A call running one fixed random batch through the model compiled for that shape alone (a
        dynamic shape costs OpenVINO speed), for latency timing."""
        import numpy as np

        model = self.model.clone()
        model.reshape([batch, 3, imgsz, imgsz])
        request = compile_ir(model, self.threads, self.precision).create_infer_request()
        x = np.random.default_rng(0).standard_normal((batch, 3, imgsz, imgsz)).astype(np.float32)
        return lambda: request.infer({0: x})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_all(x)[0]

    def run_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the model, in its order (float32, batch first)."""
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        n, step = arr.shape[0], self.fixed_batch or arr.shape[0]
        chunks = []
        for i in range(0, n, step):
            chunk = arr[i : i + step]
            if len(chunk) < step:  # pad to the graph's batch size, drop the padding's outputs below
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            result = self.request.infer({0: chunk})
            chunks.append([np.array(result[o]) for o in self.compiled.outputs])
        outs = [np.concatenate([c[j] for c in chunks])[:n] for j in range(len(chunks[0]))]
        return [torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)) for o in outs]

    def eval(self) -> OvModel:
        return self

    def train(self, mode: bool = True) -> OvModel:
        return self

    def to(self, *args, **kwargs) -> OvModel:
        return self


def _static_dims(shape) -> list[int | None]:
    """An input's partial shape as ints, None for each dynamic dimension ([] for a dynamic rank)."""
    if not shape.rank.is_static:
        return []
    return [d.get_length() if d.is_static else None for d in shape]


def count_constants(model) -> int:
    """Numbers held in the model's float and 8-bit constants (its weights, biases, quantization
    parameters): the parameter count as the IR stores it."""
    kinds = {"f32", "f16", "bf16", "i8", "u8"}
    total = 0
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in kinds:
            total += int(numel(op.get_output_shape(0)))
    return total


def numel(shape) -> int:
    """Elements of a tensor of `shape`."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
