"""optkit's checkpoint: a build recipe plus weights, safe to load (docs/architecture.md, Checkpoints).

A file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)` and never runs code from the file. A model is rebuilt as
`create_model(arch) -> replay transforms -> load_state_dict(weights, strict=True)`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import pickle
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from optkit import __version__
from optkit.errors import CheckpointError
from optkit.io import atomic_open
from optkit.limits import NUM_CLASSES
from optkit.transforms import replay as replay_entry
from optkit.transforms import valid_version

FORMAT = "optkit-checkpoint/1"


@dataclass
class Checkpoint:
    arch: dict  # {"name": registry name, "kwargs": model options (num_classes excluded)}
    model: dict  # state_dict: parameter/buffer name -> tensor
    names: list[str]  # class names, index = class id
    imgsz: int  # the input size (pixels, square) the model was trained/validated at
    task: str = "classify"
    transforms: list[dict] = field(default_factory=list)  # structural changes to replay, in order
    ema: dict | None = None  # EMA state_dict (training checkpoints only)
    updates: int = 0  # optimizer steps taken (drives the EMA decay ramp)
    optimizer: dict | None = None
    scaler: dict | None = None  # AMP GradScaler state (CUDA training)
    epoch: int = -1  # last completed epoch, 0-based; -1 when not a training checkpoint
    best_fitness: float | None = None  # best validation top-1 so far
    train_args: dict | None = None  # the trainer's full config, for --resume
    train_state: dict | None = None  # trainer bookkeeping for --resume (early stopping, ...)
    metrics: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)  # input normalisation: {"mean": [...], "std": [...]}
    lineage: list[dict] = field(default_factory=list)  # one entry per stage: how this file was made
    optkit_version: str = __version__
    date: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def inference_weights(self) -> dict:
        """The weights to deploy: the EMA when training kept one, else the raw model."""
        return self.ema if self.ema is not None else self.model

    def add_lineage(self, stage: str, args: dict, metrics: dict | None = None) -> None:
        self.lineage.append(
            {
                "stage": stage,
                "args": to_plain(args),
                "metrics": to_plain(metrics or {}),
                "time": _now(),
                "optkit_version": __version__,
            }
        )

    def to_dict(self) -> dict:
        d = asdict_shallow(self)
        d["format"] = FORMAT
        d["date"] = _now()
        return d


def asdict_shallow(ckpt: Checkpoint) -> dict:
    """Like dataclasses.asdict but without deep-copying tensors."""
    return {f.name: getattr(ckpt, f.name) for f in fields(ckpt)}


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    import torch

    from optkit.sparse import pack_state

    path = Path(path)
    payload = ckpt.to_dict()
    # weights that are mostly zeros (unstructured pruning) are stored as bitmask + non-zero values
    for key in ("model", "ema"):
        if payload[key] is not None:
            payload[key] = pack_state(payload[key])
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


# Files optkit refuses to read as a checkpoint but another way of opening may take. The errors carry the
# facts and say no more than them; what the user can do depends on the command (which options it has),
# so the workflow words that (optkit.workflows.inputs) through `worded`, keeping the type and facts.


class PickledCheckpointError(CheckpointError):
    """The file pickles Python objects (e.g. a whole nn.Module): loading it would run code."""

    def __init__(self, path: Path, culprit: str, reader: str | None = None, message: str | None = None):
        self.path, self.culprit = path, culprit  # culprit: the first class the pickle would import
        self.reader = reader  # who was reading it (load_checkpoint's `reader`), for the workflow's words
        self.facts = (
            f"{path} is not an optkit checkpoint: it contains pickled Python objects ({culprit}), "
            "and unpickling them would run code from the file; optkit refused to load it."
        )
        super().__init__(message or self.facts)

    def worded(self, message: str) -> PickledCheckpointError:
        return PickledCheckpointError(self.path, self.culprit, self.reader, message)


class StateDictError(CheckpointError):
    """The file is a plain state_dict: weights without an architecture."""

    def __init__(self, path: Path, message: str | None = None):
        self.path = path
        self.facts = f"{path} is a plain state_dict (no architecture recorded), not an optkit checkpoint"
        super().__init__(message or self.facts)

    def worded(self, message: str) -> StateDictError:
        return StateDictError(self.path, message)


class TorchScriptFileError(CheckpointError):
    """The file is a TorchScript archive: a scripted model optkit can run but not rebuild or change."""

    def __init__(self, path: Path, message: str | None = None):
        self.path = path
        self.facts = f"{path} is a TorchScript file; optkit cannot rebuild or change a scripted model"
        super().__init__(message or self.facts)

    def worded(self, message: str) -> TorchScriptFileError:
        return TorchScriptFileError(self.path, message)


def load_checkpoint(path: str | os.PathLike, reader: str | None = None) -> Checkpoint:
    """Load an optkit checkpoint without executing anything from the file. `reader`: who reads it (e.g.
    "train --weights"), recorded on a PickledCheckpointError for the message its workflow words."""
    path = Path(path)
    return checkpoint_from_raw(path, safe_torch_load(path, reader))


def checkpoint_from_raw(path: Path, raw: Any) -> Checkpoint:
    """The Checkpoint in what `safe_torch_load(path)` returned; one-line errors for anything else."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not an optkit checkpoint (it holds a {type(raw).__name__})")
    if raw.get("format") != FORMAT:
        if is_state_dict(raw):
            raise StateDictError(path)
        raise CheckpointError(_describe_foreign_dict(path, raw))
    from optkit.sparse import unpack_state

    known = {f.name for f in fields(Checkpoint)}
    values = {k: v for k, v in raw.items() if k in known}
    for key in ("model", "ema"):
        if isinstance(values.get(key), dict):
            values[key] = unpack_state(values[key])
    try:
        ckpt = Checkpoint(**values)
    except TypeError as e:  # a required key is missing
        raise CheckpointError(f"{path} is a damaged optkit checkpoint ({e})") from None
    _check_fields(path, ckpt)
    return ckpt


def is_state_dict(raw: Any) -> bool:
    """A non-empty {name: tensor} dict (what `model.state_dict()` saves)."""
    return isinstance(raw, dict) and bool(raw) and all(hasattr(v, "shape") for v in raw.values())


def safe_torch_load(path: Path, reader: str | None = None) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, nothing executed.
    `reader`: see load_checkpoint."""
    import torch

    _check_readable_file(path)
    from optkit.foreign.scan import is_torchscript

    if is_torchscript(path):
        raise TorchScriptFileError(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = _pickled_class(path, str(e))
        if culprit is not None:
            raise PickledCheckpointError(path, culprit, reader) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
        reason = detail.group(1).strip() if detail else "unreadable pickle data"
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({reason})") from None
    except Exception as e:  # torch's parser raises any exception type on damaged bytes (found by fuzzing)
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({first_line})") from None


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; expected a .pt checkpoint file")
    from optkit.formats import model_format

    if model_format(path) == "onnx":  # by content: a name can lie
        raise CheckpointError(
            f"{path} is an ONNX model, not a PyTorch checkpoint; this command needs a .pt checkpoint"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes)")


def _pickled_class(path: Path, message: str) -> str | None:
    """The first class the pickle in `path` would import, or None when it is no pickled object (random or
    damaged bytes). torch names the global it refused ("Unsupported global: GLOBAL models.yolo.Model was
    not ..."); other torch versions word it differently: then the pickle's own globals, read unexecuted."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if match is not None:
        return match.group(1)
    from optkit.foreign.scan import pickle_globals, unsafe_globals

    return next(iter(unsafe_globals(pickle_globals(path))), None)


def _describe_foreign_dict(path: Path, raw: dict) -> str:
    fmt = raw.get("format")
    if isinstance(fmt, str) and fmt.startswith("optkit-checkpoint/"):
        return f"{path} uses checkpoint format {fmt}, which this optkit ({__version__}) cannot read"
    return f"{path} is not an optkit checkpoint (no 'format: {FORMAT}' key)"


MAX_CLASSES = NUM_CLASSES.high  # a bound on the classifier a file can make optkit allocate


def _check_fields(path: Path, ckpt: Checkpoint) -> None:
    """Every field has the type the rest of optkit relies on; sizes that drive allocation are bounded.
    (A file is data from anywhere: a wrong type here would surface later as a confusing exception.)"""
    from optkit.models.imgsz import MAX_IMGSZ

    def damaged(reason: str):
        return CheckpointError(f"{path} is a damaged optkit checkpoint ({reason})")

    arch_ok = isinstance(ckpt.arch, dict) and isinstance(ckpt.arch.get("name"), str)
    if not arch_ok or not isinstance(ckpt.model, dict) or not ckpt.model:
        raise damaged("no architecture or weights")
    kwargs = ckpt.arch.get("kwargs")
    if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
        raise damaged("architecture options are not a dict of named options")
    if "num_classes" in (kwargs or {}):
        raise damaged("num_classes in the architecture options; it comes from the class names")
    for part in ("model", "ema"):
        if getattr(ckpt, part) is not None and not _is_weights(getattr(ckpt, part)):
            raise damaged(f"'{part}' is not a dict of named dense tensors")
    names = ckpt.names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise damaged("no class names, or names that are not strings")
    if len(names) > MAX_CLASSES:
        raise damaged(f"{len(names):,} class names; at most {MAX_CLASSES:,} are supported")
    if isinstance(ckpt.imgsz, bool) or not isinstance(ckpt.imgsz, int) or not 0 < ckpt.imgsz <= MAX_IMGSZ:
        raise damaged(f"bad imgsz {_short(ckpt.imgsz)}")
    transforms_ok = isinstance(ckpt.transforms, list) and all(
        isinstance(t, dict) and isinstance(t.get("kind"), str) for t in ckpt.transforms
    )
    if not transforms_ok:
        raise damaged("transforms are not a list of {kind: ...} entries")
    for t in ckpt.transforms:  # replaying runs the model at this size (e.g. to trace a pruning graph)
        size = t.get("imgsz", 1)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_IMGSZ:
            raise damaged(f"the '{t['kind']:.40}' transform has a bad imgsz {_short(size)}")
        if not valid_version(t.get("version", 1)):  # none: written before versions (1)
            raise damaged(f"the '{t['kind']:.40}' transform has a bad version {_short(t['version'])}")
    for name, kind in (("epoch", int), ("updates", int), ("task", str)):
        value = getattr(ckpt, name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise damaged(f"{name} is a {type(value).__name__}")
    for name in ("optimizer", "scaler", "train_args", "train_state"):
        if not isinstance(getattr(ckpt, name), (dict, type(None))):
            raise damaged(f"{name} is a {type(getattr(ckpt, name)).__name__}")
    for name, kind in (("metrics", dict), ("preprocess", dict), ("lineage", list)):
        if not isinstance(getattr(ckpt, name), kind):
            raise damaged(f"{name} is a {type(getattr(ckpt, name)).__name__}")
    if ckpt.best_fitness is not None and (
        isinstance(ckpt.best_fitness, bool) or not isinstance(ckpt.best_fitness, (int, float))
    ):
        raise damaged(f"best_fitness is a {type(ckpt.best_fitness).__name__}")


def _short(value: Any) -> str:
    """A value for a one-line message: its repr's first 40 characters (a tensor's repr spans lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _is_weights(state: Any) -> bool:
    """A {name: dense CPU tensor} dict, as `state_dict()` gives (no sparse, meta or nested tensors)."""
    import torch

    return isinstance(state, dict) and all(
        isinstance(k, str)
        and type(v) in (torch.Tensor, torch.nn.Parameter)
        and v.layout == torch.strided
        and v.device.type == "cpu"
        for k, v in state.items()
    )


def build_model(ckpt: Checkpoint, weights: str = "inference"):
    """Rebuild the nn.Module: registry -> transform replay -> strict load. Returns it in eval mode.

    weights: "inference" (EMA if present, else model), "model" (raw training weights) or "ema".
    """
    model = create_architecture(ckpt)
    state = {"inference": ckpt.inference_weights(), "model": ckpt.model, "ema": ckpt.ema}[weights]
    if state is None:
        raise CheckpointError(f"checkpoint has no {weights} weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"checkpoint weights do not fit its architecture: {first}") from None
    return model.eval()


def create_architecture(ckpt: Checkpoint):
    """The model with the checkpoint's structure and freshly initialised weights."""
    from optkit.models import create_model

    kwargs = dict(ckpt.arch.get("kwargs") or {})
    name = ckpt.arch["name"]
    try:
        model = create_model(name, num_classes=ckpt.num_classes, **kwargs)
    except (TypeError, ValueError) as e:  # options of the right name but a type the factory cannot use
        raise CheckpointError(f"the checkpoint's options for model {name!r} are invalid ({e})") from None
    for entry in ckpt.transforms:
        model = replay_transform(model, entry)
    return model


def replay_transform(model, entry: dict):
    """Give `model` the structure one transform entry records, through the registry of its owner
    (optkit.transforms): unknown kinds and versions newer than this optkit's are refused."""
    return replay_entry(model, entry)


def checkpoint_from_model(model, names: list[str], imgsz: int, **extra) -> Checkpoint:
    """A fresh checkpoint for a registry model (built by `optkit.models.create_model`)."""
    return Checkpoint(
        arch={"name": model.arch_name, "kwargs": dict(model.arch_options)},
        model=state_dict_cpu(model),
        names=list(names),
        imgsz=int(imgsz),
        **extra,
    )


def without_training_state(ckpt: Checkpoint, **changes) -> Checkpoint:
    """A copy with no optimizer, EMA, AMP scaler, update count, best fitness or resume state."""
    return dataclasses.replace(
        ckpt,
        ema=None,
        optimizer=None,
        scaler=None,
        updates=0,
        best_fitness=None,
        train_args=None,
        train_state=None,
        lineage=list(ckpt.lineage),
        **changes,
    )


def derived_checkpoint(ckpt: Checkpoint, model, transform: dict | None = None) -> Checkpoint:
    """The checkpoint a stage writes: the source's recipe and provenance, the stage's model weights,
    one more transform when the stage changed the structure, and no training state."""
    transforms = list(ckpt.transforms) + ([transform] if transform else [])
    return without_training_state(ckpt, model=state_dict_cpu(model), transforms=transforms)


def state_dict_cpu(model) -> dict:
    """A detached, contiguous CPU copy of a model's state_dict (safe to keep while training goes on; the
    same bytes whatever memory layout the model trained in: optkit.train.memory_format)."""
    import torch

    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def to_plain(obj: Any) -> Any:
    """Convert to the types weights_only loading accepts (str, numbers, bool, None, lists, dicts)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return to_plain(asdict(obj))
    return str(obj)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
