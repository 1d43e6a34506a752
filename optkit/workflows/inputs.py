"""The one way a command opens the model file it was given (`open_model`).

What a path can be, and what optkit does with it:

- an optkit checkpoint: the rebuilt model; outputs are optkit checkpoints.
- a foreign pickled checkpoint (YOLOv5 / Ultralytics): only with --trust (and --code-dir when its code
  is not importable); its module (the EMA when there is one); outputs keep the file's own layout.
- a plain state_dict: only with --model NAME, loaded strictly into that zoo model; outputs are optkit
  checkpoints.
- a TorchScript archive: profile and export only (a scripted model cannot be rebuilt or changed).

Every check that can fail runs before anything from the file is executed: a pickled file is refused
without `--trust` by torch's weights-only loader, which never imports the classes it names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import CheckpointError, ConfigError, DatasetError

if TYPE_CHECKING:
    from torch import nn

    from optkit.checkpoint import Checkpoint
    from optkit.foreign.checkpoint import ForeignCheckpoint

TORCHSCRIPT_COMMANDS = ("profile", "export")
# The commands that open their model file with open_model: they take --trust (a foreign pickled
# checkpoint) and --model NAME (a plain state_dict). The others read optkit checkpoints only.
OPEN_MODEL_COMMANDS = (
    "info",
    "fuse",
    "prune",
    "strip",
    "export",
    "profile",
    "val",
    "predict",
    "ptq-calibrate",
)
TRUST_ONLY_COMMANDS = ("convert",)  # open a foreign file with --trust, but take no --model


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


TRUSTING_COMMANDS = _listed((*OPEN_MODEL_COMMANDS, *TRUST_ONLY_COMMANDS))
STATE_DICT_COMMANDS = _listed(OPEN_MODEL_COMMANDS)  # the commands with --model NAME


@dataclass
class ModelInput:
    """An opened model file: facts about it, fresh model copies, and how to write a stage's output."""

    path: Path
    kind: str  # "optkit" | "foreign" | "state_dict" | "torchscript"
    names: list[str]  # class names (index = class id); "0".."N-1" when the file has none
    imgsz: int  # pixels, the input side the model was trained at
    stride: int  # pixels, the largest downsampling: input sides must be a multiple of it
    task: str  # "classify", "detect", ...
    arch: str  # registry name, or the foreign module's class
    ckpt: Checkpoint | None = None  # optkit and state_dict inputs (a state_dict is converted on open)
    foreign: ForeignCheckpoint | None = None
    scripted: Any = None  # the loaded TorchScript module
    preprocess: dict | None = None  # {"mean", "std"} the model expects; None: optkit's (ImageNet)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def writes_optkit(self) -> bool:
        """Outputs are optkit checkpoints (optkit and state_dict inputs)."""
        return self.ckpt is not None

    def model(self) -> nn.Module:
        """A fresh float32 eval-mode model (the inference weights: EMA when the file has one)."""
        if self.ckpt is not None:
            from optkit.checkpoint import build_model

            return build_model(self.ckpt)
        if self.foreign is not None:
            return self.foreign.module()
        return self.scripted.float().eval()

    def stage_checkpoint(
        self,
        model: nn.Module,
        stage: str,
        args: dict,
        metrics: dict | None = None,
        transform: dict | None = None,
    ) -> Checkpoint:
        """optkit inputs: the checkpoint a stage writes (source recipe, the stage's weights, lineage)."""
        from optkit.checkpoint import derived_checkpoint

        if self.ckpt is None:
            raise ConfigError(f"{self.path} is a {self.kind} file; this step needs an optkit checkpoint")
        new = derived_checkpoint(self.ckpt, model, transform)
        new.add_lineage(stage, {**args, "source": str(self.path)}, metrics)
        return new

    def save_stage_output(
        self,
        model: nn.Module,
        target: str | os.PathLike,
        stage: str,
        args: dict,
        metrics: dict | None = None,
        transform: dict | None = None,
    ) -> Path:
        """Write what a stage made of this input, in this input's layout, atomically."""
        if self.foreign is not None:
            from optkit.foreign.checkpoint import save_foreign

            return save_foreign(
                self.with_lineage(self.foreign.with_module(model), stage, args, metrics), target
            )
        if self.ckpt is None:
            raise ConfigError(_script_refusal(self.path, stage))
        from optkit.checkpoint import save_checkpoint

        return save_checkpoint(self.stage_checkpoint(model, stage, args, metrics, transform), target)

    def save_stripped(self, target: str | os.PathLike, half: bool) -> tuple[Path, list[str]]:
        """strip: the deployed weights without training state; returns (path, what was dropped)."""
        if self.foreign is not None:
            from optkit.foreign.checkpoint import save_foreign

            dropped = self.foreign.dropped_parts()
            obj = self.with_lineage(
                self.foreign.stripped(half), "strip", {"half": half}, {"dropped": dropped}
            )
            return save_foreign(obj, target), dropped
        from optkit.checkpoint import save_checkpoint
        from optkit.stages.strip import StripConfig, dropped_parts, strip

        dropped = dropped_parts(self.ckpt)
        stripped = strip(self.ckpt, StripConfig(half=half))
        stripped.add_lineage("strip", {"half": half, "source": str(self.path)}, {"dropped": dropped})
        return save_checkpoint(stripped, target), dropped

    def with_lineage(self, obj: Any, stage: str, args: dict, metrics: dict | None) -> Any:
        """A foreign dict gains (or extends) an `optkit_lineage` list; other keys are left as they are."""
        from optkit.checkpoint import Checkpoint

        if not isinstance(obj, dict):
            return obj
        holder = Checkpoint(arch={}, model={}, names=[], imgsz=0)  # only to format the entry
        holder.add_lineage(stage, {**args, "source": str(self.path)}, metrics)
        previous = obj.get("optkit_lineage")
        obj["optkit_lineage"] = (list(previous) if isinstance(previous, list) else []) + holder.lineage
        return obj


def open_model(
    path: str | os.PathLike,
    *,
    command: str,
    trust: bool = False,
    code_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
) -> ModelInput:
    """Open `path` for `command` (see the module doc for what each kind of file needs)."""
    from optkit.checkpoint import PickledCheckpointError, _check_readable_file, safe_torch_load
    from optkit.foreign.scan import is_torchscript

    path = Path(path)
    _check_readable_file(path)
    if is_torchscript(path):
        if command not in TORCHSCRIPT_COMMANDS:
            raise CheckpointError(_script_refusal(path, command))
        if model_name:
            raise ConfigError(f"--model is for plain state_dict files; {path} is a TorchScript file")
        return _open_torchscript(path)
    try:
        raw = safe_torch_load(path)
    except PickledCheckpointError as e:
        if not trust:
            raise e.worded(f"{e.facts} {_RERUN_WITH_TRUST}") from None
        if model_name:
            raise ConfigError(
                f"--model is for plain state_dict files; {path} pickles its own model"
            ) from None
        return _open_foreign(path, code_dir)
    from optkit.checkpoint import is_state_dict

    if isinstance(raw, dict) and "state_dict" in raw and is_state_dict(raw["state_dict"]) and model_name:
        raw = raw["state_dict"]  # a Lightning-style {"state_dict": ...} wrapper
    if model_name:
        if not is_state_dict(raw):
            raise ConfigError(f"--model is for plain state_dict files; {path} is not one (drop --model)")
        return _open_state_dict(path, raw, model_name)
    ckpt = _optkit_checkpoint(path, raw)
    return ModelInput(
        path=path,
        kind="optkit",
        names=list(ckpt.names),
        imgsz=ckpt.imgsz,
        stride=32,  # every zoo model downsamples by 32 (optkit.models)
        task=ckpt.task,
        arch=ckpt.arch["name"],
        ckpt=ckpt,
        preprocess=dict(ckpt.preprocess) or None,
    )


_RERUN_WITH_TRUST = (
    "If you trust the file, rerun with --trust (and --code-dir DIR when its model code is not importable)"
)


def _optkit_checkpoint(path: Path, raw: Any) -> Checkpoint:
    """The checkpoint in `raw`; a plain state_dict is refused with the option that loads one."""
    from optkit.checkpoint import StateDictError, checkpoint_from_raw

    try:
        return checkpoint_from_raw(path, raw)
    except StateDictError as e:
        advice = "give --model NAME (see optkit models) to load it into a zoo model"
        raise e.worded(f"{e.facts}; {advice}") from None


@contextmanager
def optkit_checkpoints_only(reader: str) -> Iterator[None]:
    """Within the block, a file that only open_model's commands take (a pickled checkpoint, a plain
    state_dict, a TorchScript archive) is refused in words for `reader`, a command (and option) that
    reads optkit checkpoints only, e.g. "benchmark" or "train --weights": it names the commands that
    take such a file, never an option `reader` lacks. A PickledCheckpointError that names its own reader
    (load_checkpoint's `reader`) is worded for that one."""
    from optkit.checkpoint import PickledCheckpointError, StateDictError, TorchScriptFileError

    try:
        yield
    except PickledCheckpointError as e:
        only = f"`optkit {e.reader or reader}` reads optkit checkpoints only"
        raise e.worded(f"{e.facts} {only} ({TRUSTING_COMMANDS} take such a file with --trust)") from None
    except StateDictError as e:
        only = f"`optkit {reader}` reads optkit checkpoints only"
        raise e.worded(f"{e.facts}; {only} ({STATE_DICT_COMMANDS} load one with --model NAME)") from None
    except TorchScriptFileError as e:
        readers = " and ".join(TORCHSCRIPT_COMMANDS)
        raise e.worded(
            f"{e.path} is a TorchScript file; optkit reads those only in {readers} "
            "(it cannot rebuild or change a scripted model)"
        ) from None


def load_optkit_checkpoint(path: str | os.PathLike, reader: str) -> Checkpoint:
    """optkit.checkpoint.load_checkpoint for a command that reads optkit checkpoints only (`reader`, see
    optkit_checkpoints_only): what it refuses says which commands take the file."""
    from optkit.checkpoint import load_checkpoint

    with optkit_checkpoints_only(reader):
        return load_checkpoint(path, reader)


def _open_foreign(path: Path, code_dir) -> ModelInput:
    from optkit.foreign.checkpoint import load_trusted, preprocess_of
    from optkit.limits import options_named

    with options_named({"trust": "--trust", "code_dir": "--code-dir"}):  # the loader names fields
        foreign = load_trusted(path, code_dir)
    module = foreign.stored_module
    names = foreign.names
    if not names:
        raise CheckpointError(f"{path}: its model has no class names ('names') and no class count ('nc')")
    return ModelInput(
        path=path,
        kind="foreign",
        names=names,
        imgsz=foreign.imgsz,
        stride=foreign.stride,
        task=foreign.task,
        arch=f"{type(module).__module__}.{type(module).__qualname__}",
        foreign=foreign,
        preprocess=preprocess_of(module),
    )


def _open_state_dict(path: Path, state: dict, name: str) -> ModelInput:
    """A zoo model built to the state_dict's class count, loaded strictly, as a fresh optkit checkpoint."""
    from optkit.checkpoint import checkpoint_from_model
    from optkit.models import create_model, get_spec
    from optkit.models.parts import output_layer_names

    spec = get_spec(name)  # unknown names: a ModelError listing the known ones
    probe = create_model(name, num_classes=1)
    head_name = next(iter(output_layer_names(probe)), None)  # the classifier Linear the model declares
    weight = state.get(f"{head_name}.weight") if head_name is not None else None
    if weight is None or getattr(weight, "ndim", 0) != 2:
        raise CheckpointError(
            f"{path} does not fit model {name!r}: it has no classifier weight {head_name}.weight"
        )
    model = create_model(name, num_classes=int(weight.shape[0]))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:240]
        raise CheckpointError(f"{path} does not fit model {name!r}: {detail}") from None
    names = [str(i) for i in range(model.num_classes)]
    ckpt = checkpoint_from_model(model.eval(), names, spec.default_imgsz)
    ckpt.add_lineage("import", {"source": str(path), "state_dict_into": name})
    return ModelInput(
        path=path,
        kind="state_dict",
        names=names,
        imgsz=spec.default_imgsz,
        stride=int(model.stride),
        task="classify",
        arch=name,
        ckpt=ckpt,
        notes=[f"weights from a plain state_dict loaded into {name}; class names unknown (0..N-1)"],
    )


def _open_torchscript(path: Path) -> ModelInput:
    """torch.jit.load (TorchScript runs in torch's interpreter, not as Python code from the file), with
    names/stride/imgsz from the `config.txt` that YOLOv5 and Ultralytics embed when they export."""
    import json

    import torch

    extra = {"config.txt": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch.jit raises RuntimeError and friends for damaged archives
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path} is a damaged TorchScript file ({first})") from None
    meta: dict = {}
    try:
        loaded = json.loads(extra["config.txt"] or "{}")
        meta = loaded if isinstance(loaded, dict) else {}
    except (ValueError, TypeError):
        pass
    from optkit.foreign.checkpoint import class_names

    names = class_names(module, meta)
    stride = meta.get("stride")
    stride = int(max(stride)) if isinstance(stride, list) and stride else stride
    stride = stride if isinstance(stride, int) and stride > 0 else 32
    imgsz = meta.get("imgsz", meta.get("shape"))
    if isinstance(imgsz, list) and imgsz:
        imgsz = max(imgsz[-2:])
    imgsz = imgsz if isinstance(imgsz, int) and imgsz > 0 else 640
    return ModelInput(
        path=path,
        kind="torchscript",
        names=names,
        imgsz=-(-imgsz // stride) * stride,
        stride=stride,
        task=str(meta.get("task") or "unknown"),
        arch=f"TorchScript {getattr(module, 'original_name', type(module).__name__)}",
        scripted=module,
        notes=["TorchScript: profiled as scripted (BatchNorm not folded, no per-layer hooks)"],
    )


def _script_refusal(path: Path, command: str) -> str:
    return (
        f"{path} is a TorchScript file: optkit can profile and export it, but {command} needs a model it "
        "can rebuild (an optkit checkpoint, a foreign checkpoint with --trust, or a state_dict with --model)"
    )


@contextmanager
def bad_labels_flag():
    """A dataset refused for bad label rows says which flag drops those images instead."""
    from optkit.data.yolo_format import BadLabels

    try:
        yield
    except BadLabels as e:
        raise DatasetError(f"{e} (--skip-bad-labels drops them)") from None
