"""Foreign checkpoints: YOLOv5 / YOLOv6 / Ultralytics files that pickle the whole `nn.Module`.

Loading one runs code from the file and from the model's package, so it happens only after `--trust`
(`load_trusted`). The file is kept as it was loaded (`ForeignCheckpoint.raw`, every key and value), and
outputs are written in the same layout, so the user's own tools still read them:

- the module optkit works on is the one those tools deploy: `ema` when it holds a module, else `model`
  (what YOLOv5's `attempt_load` and Ultralytics' `attempt_load_one_weight` pick). A mid-training
  Ultralytics `last.pt` has `model: None` and the module in `ema`.
- it is processed as a float32 eval-mode copy; what a stage returns goes back under `model` in the
  file's own floating dtype (fp16 stays fp16);
- a stage's output (fuse, prune, ...) and `strip` drop the training state the way Ultralytics'
  `strip_optimizer` does: `ema`, `optimizer`, `best_fitness`, `updates` (and `scaler`, `stopper` when the
  file has them) become None and `epoch` -1; every other key (`train_args`, `opt`, `git`, `version`,
  `license`, `docs`, `train_metrics`, `modelopt`, ...) is written back unchanged.
- a file that is a bare pickled module (`torch.save(model)`) is written back as a bare module.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import CheckpointError
from optkit.limits import FieldsError

if TYPE_CHECKING:
    import torch
    from torch import nn

# Training state a finished file no longer carries (Ultralytics' strip_optimizer sets these to None).
TRAINING_KEYS = ("ema", "optimizer", "best_fitness", "updates", "scaler", "stopper")
DEFAULT_IMGSZ = 640  # pixels: YOLO detection's training size, when the file does not say


class TrustedLoadError(FieldsError, CheckpointError):
    """A trusted file that would not load, where an option is the way out: the message names the fields
    `trust` and `code_dir` (optkit.limits.FieldsError), and the flow that opens the file names its flags."""

    def __init__(self, template: str, **values: Any):
        super().__init__(template, ("trust", "code_dir"), **values)


@dataclass
class ForeignCheckpoint:
    path: Path
    raw: Any  # the loaded object: the checkpoint dict, or a bare nn.Module
    key: str | None  # where the deployed module was found: "ema", "model", or None for a bare module
    dtype: torch.dtype  # floating dtype of the module as stored (e.g. torch.float16)

    @property
    def stored_module(self) -> nn.Module:
        return self.raw if self.key is None else self.raw[self.key]

    def module(self) -> nn.Module:
        """A float32, eval-mode copy of the deployed module (the file's objects are not touched)."""
        return copy.deepcopy(self.stored_module).float().eval()

    @property
    def names(self) -> list[str]:
        return class_names(self.stored_module, self.raw)

    @property
    def stride(self) -> int:
        return module_stride(self.stored_module)

    @property
    def imgsz(self) -> int:
        return train_imgsz(self.raw, self.stored_module, self.stride)

    @property
    def task(self) -> str:
        return model_task(self.stored_module, self.raw)

    def keys(self) -> list[str]:
        return [str(k) for k in self.raw] if isinstance(self.raw, dict) else []

    def with_module(self, module: nn.Module, half: bool = False) -> Any:
        """The object to save: this file's layout with `module` (in the stored dtype, or fp16 with `half`)
        as the model and no training state. The loaded object is not modified."""
        import torch

        out = copy.deepcopy(module).to(torch.float16 if half else self.dtype).eval()
        if self.key is None:
            return out
        raw = dict(self.raw)  # a new dict; values other than the ones replaced are the loaded objects
        raw["model"] = out
        for k in TRAINING_KEYS:
            if k in raw or k in ("ema", "optimizer", "best_fitness", "updates"):
                raw[k] = None
        raw["epoch"] = -1
        return raw

    def stripped(self, half: bool = False) -> Any:
        """Ultralytics' strip: the deployed module (EMA when present) becomes the model, training state is
        dropped, parameters stop requiring gradients."""
        out = self.with_module(self.module(), half=half)
        model = out if self.key is None else out["model"]
        for p in model.parameters():
            p.requires_grad_(False)
        return out

    def dropped_parts(self) -> list[str]:
        if not isinstance(self.raw, dict):
            return []
        parts = []
        if self.key == "ema":
            parts.append("ema (became the model)")
        for k in TRAINING_KEYS[1:]:
            if self.raw.get(k) is not None:
                parts.append(k)
        return parts


def save_foreign(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, atomically (a crash leaves the old file or the new one)."""
    import torch

    from optkit.io import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return path


@contextlib.contextmanager
def import_path(code_dir: str | os.PathLike | None) -> Iterator[None]:
    """`code_dir` first on sys.path inside the block (a YOLOv5 checkout: `models.yolo`, `utils.*`)."""
    if code_dir is None:
        yield
        return
    folder = Path(code_dir)
    if not folder.is_dir():
        raise TrustedLoadError("{code_dir} {folder}: no such folder", folder=folder)
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def load_trusted(path: Path, code_dir: str | os.PathLike | None = None) -> ForeignCheckpoint:
    """Unpickle a trusted file (this runs code) and find its module; one-line errors for what goes wrong
    (a TrustedLoadError where the way out is an option: `trust`, `code_dir`)."""
    import torch
    from torch import nn

    from optkit.foreign.scan import hostile_globals, pickle_globals

    hostile = hostile_globals(pickle_globals(path))
    if hostile:
        raise TrustedLoadError(
            "{path} was refused even with {trust}: its pickle calls {culprit}, which no model "
            "checkpoint needs",
            path=path,
            culprit=hostile[0],
        )
    with import_path(code_dir):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, ImportError) as e:
            raise _missing_code(path, e, code_dir) from None
        except AttributeError as e:  # the class moved or was renamed in the importable code
            raise TrustedLoadError(
                "{path} needs code that the importable version does not have ({why}); "
                "point {code_dir} at the checkout the model was trained with",
                path=path,
                why=_first_line(e),
            ) from None
        except Exception as e:
            raise CheckpointError(
                f"{path} could not be unpickled ({type(e).__name__}: {_first_line(e)})"
            ) from None
    if isinstance(raw, nn.Module):
        return ForeignCheckpoint(path, raw, None, _float_dtype(raw))
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a model checkpoint")
    for key in ("ema", "model"):
        if isinstance(raw.get(key), nn.Module):
            return ForeignCheckpoint(path, raw, key, _float_dtype(raw[key]))
    found = ", ".join(f"{k}: {type(v).__name__}" for k, v in list(raw.items())[:6])
    raise CheckpointError(f"{path} has no nn.Module under 'ema' or 'model' ({found})")


def _missing_code(path: Path, e: ImportError, code_dir) -> CheckpointError:
    name = getattr(e, "name", None) or _first_line(e)
    if name and name.split(".")[0] in ("torchvision", "ultralytics", "timm"):
        return CheckpointError(
            f"{path} needs the package '{name.split('.')[0]}' to load; install it beside optkit"
        )
    where = " (not found in {code_dir} {folder} either)" if code_dir else ""
    return TrustedLoadError(
        "{path} needs the Python module '{name}' that defined its model" + where + "; pass {code_dir} DIR "
        "with the folder that holds it (e.g. a YOLOv5 checkout) or install the package",
        path=path,
        name=name,
        folder=code_dir,
    )


def _float_dtype(module: nn.Module) -> torch.dtype:
    import torch

    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


# --- facts the files and modules carry (YOLOv5, Ultralytics and alike) -----------------------------


def class_names(module: nn.Module, raw: Any = None) -> list[str]:
    """`names` of the module (a list, or Ultralytics' {index: name} dict); failing that, of the file;
    failing that, "0".."N-1" from the module's `nc`."""
    for source in (getattr(module, "names", None), raw.get("names") if isinstance(raw, dict) else None):
        if isinstance(source, dict) and source:
            return [str(source[k]) for k in sorted(source)]
        if isinstance(source, (list, tuple)) and source:
            return [str(n) for n in source]
    nc = getattr(module, "nc", None) or getattr(getattr(module, "yaml", None) or {}, "get", lambda k: None)(
        "nc"
    )
    if isinstance(nc, int) and nc > 0:
        return [str(i) for i in range(nc)]
    return []


def module_stride(module: nn.Module) -> int:
    """The total downsampling in pixels: a YOLO `stride` tensor holds one per output level (8, 16, 32);
    the input side must be a multiple of the largest."""
    from optkit.models.imgsz import model_stride

    return model_stride(module)


def train_imgsz(raw: Any, module: nn.Module, stride: int) -> int:
    """The input size the model was trained at: `train_args.imgsz` (Ultralytics), `opt.imgsz` (YOLOv5),
    the module's `args.imgsz`; else 640 (224 for a classifier), rounded up to the stride."""
    candidates = []
    if isinstance(raw, dict):
        for key in ("train_args", "opt"):
            args = raw.get(key)
            args = vars(args) if hasattr(args, "__dict__") and not isinstance(args, dict) else args
            if isinstance(args, dict):
                candidates.append(args.get("imgsz", args.get("img_size")))
    args = getattr(module, "args", None)
    if isinstance(args, dict):
        candidates.append(args.get("imgsz"))
    elif args is not None:
        candidates.append(getattr(args, "imgsz", None))
    for value in candidates:
        if isinstance(value, (list, tuple)) and value:
            value = max(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return -(-value // stride) * stride
    return 224 if model_task(module, raw) == "classify" else DEFAULT_IMGSZ


def model_task(module: nn.Module, raw: Any = None) -> str:
    """ "classify" or "detect" (or what the file says: Ultralytics' train_args.task / the module's task)."""
    for args in (raw.get("train_args") if isinstance(raw, dict) else None, getattr(module, "args", None)):
        task = args.get("task") if isinstance(args, dict) else getattr(args, "task", None)
        if isinstance(task, str) and task:
            return task
    task = getattr(module, "task", None)
    if isinstance(task, str) and task:
        return task
    blocks = getattr(module, "model", None)
    last = (
        blocks[-1] if hasattr(blocks, "__getitem__") and hasattr(blocks, "__len__") and len(blocks) else None
    )
    if last is not None and "classify" in type(last).__name__.lower():
        return "classify"
    if "classif" in type(module).__name__.lower():
        return "classify"
    return "detect"


def preprocess_of(module: nn.Module) -> dict | None:
    """{"mean", "std"} from a Normalize in the module's pickled `transforms` (torchvision or alike)."""
    transforms = getattr(module, "transforms", None)
    stack, seen = [transforms], 0
    while stack and seen < 100:
        t = stack.pop()
        seen += 1
        if t is None:
            continue
        mean, std = getattr(t, "mean", None), getattr(t, "std", None)
        if mean is not None and std is not None:
            try:
                mean, std = [float(v) for v in mean], [float(v) for v in std]
            except (TypeError, ValueError):
                continue
            if len(mean) == 3 and len(std) == 3:
                return {"mean": mean, "std": std}
        stack.extend(reversed(list(getattr(t, "transforms", None) or [])))
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
