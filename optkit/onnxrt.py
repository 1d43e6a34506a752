"""ONNX files and ONNX Runtime: load and check an .onnx file, read optkit's metadata back, and run a model
with ONNX Runtime as if it were an eval-mode torch model (so `optkit.measure.evaluate` works on it).

optkit writes these `metadata_props` when it exports (all values are strings in ONNX):
`names` (JSON list), `imgsz`, `stride` (ints), `task`, `arch`, `optkit_version`, `source_sha256` and
`preprocess` (JSON {"mean": [...], "std": [...]}). `read_metadata` decodes them.

onnx, onnxruntime, numpy and torch are imported inside the functions (docs/architecture.md, Heavy imports).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import CheckpointError, ConfigError
from optkit.limits import ConfigFieldsError

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    import torch

JSON_KEYS = ("names", "preprocess")  # metadata values stored as JSON text
INT_KEYS = ("imgsz", "stride")  # metadata values stored as decimal text


class OnnxFileError(CheckpointError):
    """A file is missing, is not ONNX, or is an ONNX model optkit cannot use."""


def check_onnx_path(path: str | os.PathLike) -> Path:
    """The path, if it names a non-empty file that could be ONNX; else a one-line OnnxFileError."""
    path = Path(path)
    if not path.exists():
        raise OnnxFileError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxFileError(f"{path} is a directory; expected an .onnx file")
    from optkit.formats import model_format

    if model_format(path) == "torch":  # by content: a name can lie
        raise OnnxFileError(
            f"{path} is a PyTorch checkpoint, not an ONNX model; this needs an .onnx model "
            "(see optkit export)"
        )
    if path.stat().st_size == 0:
        raise OnnxFileError(f"{path} is empty (0 bytes)")
    return path


def load_onnx(path: str | os.PathLike, check: bool = True) -> onnx.ModelProto:
    """Parse an .onnx file (and run onnx's checker on it); errors become one-line OnnxFileErrors."""
    import onnx
    from google.protobuf.message import DecodeError

    path = check_onnx_path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise OnnxFileError(f"{path} is not a valid ONNX model ({_first_line(e)})") from None
    if check:
        try:
            onnx.checker.check_model(model)
        except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
            raise OnnxFileError(f"{path} is not a valid ONNX model ({_first_line(e)})") from None
    return model


def read_metadata(path: str | os.PathLike | onnx.ModelProto) -> dict[str, Any]:
    """The model's `metadata_props` as a dict: JSON keys decoded, ints parsed, the rest as strings.

    A value that does not decode stays the raw string (the caller decides whether that is an error).
    """
    model = path if hasattr(path, "metadata_props") else load_onnx(path, check=False)
    meta: dict[str, Any] = {}
    for prop in model.metadata_props:
        value: Any = prop.value
        try:
            if prop.key in JSON_KEYS:
                value = json.loads(value)
            elif prop.key in INT_KEYS:
                value = int(value)
        except ValueError:
            pass
        meta[prop.key] = value
    return meta


def create_session(
    path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on the CPU provider (or `providers`); `threads`: intra-op threads
    (None: ONNX Runtime's default, one per physical core)."""
    import onnxruntime as ort

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    path = check_onnx_path(path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings would clutter the command's stderr
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) share no base class
        raise OnnxFileError(f"{path}: ONNX Runtime cannot load it ({_first_line(e)})") from None


class OrtModel:
    """An ONNX model run by ONNX Runtime, called like an eval-mode torch classifier: a float tensor
    batch (N, 3, H, W) in, float32 logits (N, num_classes) out, on the CPU.

    A graph with a fixed batch size B is run B images at a time (the last chunk zero-padded and the
    padding dropped), so any loader batch size works. `.eval()`, `.train()` and `.to()` return self:
    the model is inference-only and lives in ONNX Runtime.
    """

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None, session=None) -> None:
        import numpy as np

        self.path = Path(path)
        self.session = session if session is not None else create_session(path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise OnnxFileError(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "optkit runs image classifiers with one input"
            )
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)  # ints for fixed dims, strings/None for dynamic ones
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.output_name = outputs[0].name
        batch = self.input_shape[0] if self.input_shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) when the graph takes only one input size, else None."""
        if len(self.input_shape) == 4 and all(isinstance(d, int) and d > 0 for d in self.input_shape[2:]):
            return self.input_shape[2], self.input_shape[3]
        return None

    def check_input_size(self, imgsz: int) -> None:
        check_input_size(self.path, self.fixed_size(), imgsz)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._outputs(x, [self.output_name])[0]

    def run_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the graph, in its order (float32, batch first)."""
        return self._outputs(x, [o.name for o in self.session.get_outputs()])

    def _outputs(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.input_dtype)
        n, step = arr.shape[0], self.fixed_batch
        if step is None:
            outs = self._run(arr, names)
        else:
            chunks = []
            for i in range(0, n, step):
                chunk = arr[i : i + step]
                if len(chunk) < step:  # pad to the graph's batch size, drop the padding's outputs below
                    pad = np.zeros((step - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                chunks.append(self._run(chunk, names))
            outs = [np.concatenate([c[j] for c in chunks])[:n] for j in range(len(names))]
        return [torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)) for o in outs]

    def _run(self, arr, names: list[str]) -> list:
        return self.session.run(names, {self.input_name: arr})

    def eval(self) -> OrtModel:
        return self

    def train(self, mode: bool = True) -> OrtModel:
        return self

    def to(self, *args, **kwargs) -> OrtModel:
        return self


def check_input_size(path, size: tuple[int, int] | None, imgsz: int) -> None:
    """Refuse a side a graph of fixed input `size` (H, W; None: any) cannot take: a ConfigFieldsError
    over `imgsz` and export's `dynamic`."""
    if size is not None and size != (imgsz, imgsz):
        raise ConfigFieldsError(
            "{path} takes a fixed {h}x{w} input, not {asked}x{asked}: use {imgsz} {h}, or export with "
            "{dynamic} for other sizes",
            ["imgsz", "dynamic"],
            path=path, h=size[0], w=size[1], asked=imgsz,
        )  # fmt: skip


def load_optkit_onnx(path: str | os.PathLike, threads: int | None = None) -> tuple[OrtModel, dict]:
    """(OrtModel, metadata) for an .onnx written by `optkit export`; class names must be in its metadata."""
    model_proto = load_onnx(path)
    meta = read_metadata(model_proto)
    names = meta.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise OnnxFileError(
            f"{path} was not exported by optkit (no class names in metadata); export it with "
            "`optkit export` or add a 'names' JSON list to its metadata_props"
        )
    return OrtModel(path, threads), meta


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
