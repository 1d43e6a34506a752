"""The checkpoint-transform registry (docs/architecture.md, "Checkpoints and their transforms").

A checkpoint rebuilds its model as `create_model(arch)`, then replays each entry of its `transforms` list
in order, then loads the weights strictly. An entry is plain data: `{"kind": KIND, "version": N, ...}`.
The module that makes a kind of entry owns it: its `KIND` and `VERSION` constants, the builder that
writes the entry and `replay(model, entry) -> model`, which gives a fresh architecture the structure
the weights were saved from. It registers them here with `register_transform`; `optkit.checkpoint`
looks kinds up here and knows none by name.

The owner modules (`PROVIDERS`) are imported on the first lookup, as torchao finds the handler of a
config type: `optkit.checkpoint` sits below the stages and may not import them, and a command that never
rebuilds a model never imports them.

Versions. An entry without "version" was written before versions existed: it is version 1. An entry
newer than the registered version is refused (this optkit cannot know what its fields mean). An owner
that changes what its fields mean raises its VERSION and registers `upgrade(entry, version) -> entry`,
which rewrites an entry of any older `version` into the current layout before `replay` sees it. For
example, a fuse v2 that renamed "fused" to "pairs" would register

    def upgrade(entry: dict, version: int) -> dict:  # version < 2: the entry's own
        return {**entry, "version": 2, "pairs": entry.get("fused")}

    register_transform("fuse", 2, replay, upgrade=upgrade)

and its `replay` would read "pairs" only. Files written by earlier optkit must keep loading:
tests/test_checkpoint_fixtures.py rebuilds such files to their recorded outputs (never regenerate them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optkit import __version__
from optkit.errors import CheckpointError

# The modules that register transform kinds, imported on the first lookup (a new kind: add its module).
PROVIDERS = (
    "optkit.stages.fuse",
    "optkit.stages.prune",
    "optkit.stages.prune_structured",
    "optkit.quant.quantizers",
)

Replay = Callable[[Any, dict], Any]  # (model, entry) -> the model with the recorded structure
Upgrade = Callable[[dict, int], dict]  # (entry, its older version) -> the entry in the current layout


class TransformError(CheckpointError):
    """A checkpoint's transform entry cannot be replayed by this optkit (unknown kind, newer version,
    malformed fields)."""


@dataclass(frozen=True)
class Transform:
    kind: str
    version: int  # the entry layout this optkit writes and reads
    replay: Replay
    upgrade: Upgrade | None = None  # reads entries older than `version`; None while version is 1
    owner: str = ""  # the module that registered it


_REGISTRY: dict[str, Transform] = {}
_providers_imported = False


def register_transform(
    kind: str, version: int, replay: Replay, *, upgrade: Upgrade | None = None
) -> Transform:
    """Register (at import of the owner module) how entries of `kind` are replayed.

    Re-registering from the same module (a reload) replaces the entry; another module taking a kind
    that is already owned is a programming error.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a transform kind is a non-empty string, got {kind!r}")
    if not valid_version(version):
        raise ValueError(f"transform {kind!r}: the version is an integer >= 1, got {version!r}")
    if version > 1 and upgrade is None:
        raise ValueError(f"transform {kind!r} version {version}: pass upgrade= to read older entries")
    owner = getattr(replay, "__module__", "") or ""
    known = _REGISTRY.get(kind)
    if known is not None and known.owner != owner:
        raise ValueError(f"transform kind {kind!r} is already registered by {known.owner}")
    spec = Transform(kind=kind, version=version, replay=replay, upgrade=upgrade, owner=owner)
    _REGISTRY[kind] = spec
    return spec


def get_transform(kind: str) -> Transform:
    """The registered transform of `kind`; TransformError when this optkit does not know it."""
    _import_providers()
    spec = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise TransformError(
            f"checkpoint needs transform '{_short(kind)}', which this optkit ({__version__}) does not know "
            f"(it knows {', '.join(known_kinds())}; a newer optkit may have written the file)"
        )
    return spec


def known_kinds() -> list[str]:
    _import_providers()
    return sorted(_REGISTRY)


def valid_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def entry_version(entry: dict) -> int:
    """The version an entry was written as: 1 when it has none (written before versions existed)."""
    version = entry.get("version", 1)
    if not valid_version(version):
        raise TransformError(
            f"the checkpoint's '{_short(entry.get('kind'))}' transform has a bad version {_short(version)}"
        )
    return version


def current_entry(entry: dict) -> tuple[Transform, dict]:
    """(the entry's transform, the entry in the layout its replay reads): refuses unknown kinds and
    versions newer than this optkit's, upgrades older ones."""
    spec = get_transform(entry.get("kind"))
    version = entry_version(entry)
    if version > spec.version:
        raise TransformError(
            f"checkpoint needs version {version} of the '{spec.kind}' transform; this optkit "
            f"({__version__}) reads up to version {spec.version}: upgrade optkit to rebuild this model"
        )
    if version < spec.version:
        try:
            entry = spec.upgrade(dict(entry), version)
        except _FIELD_ERRORS as e:
            raise _damaged(spec.kind, e) from None
    return spec, entry


def replay(model: Any, entry: dict) -> Any:
    """Give `model` the structure `entry` records (see the module doc); damaged fields raise
    TransformError instead of whatever the replay tripped on."""
    spec, entry = current_entry(entry)
    try:
        return spec.replay(model, entry)
    except _FIELD_ERRORS as e:
        raise _damaged(spec.kind, e) from None


# what a replay trips on when a field has the wrong type or shape (the file is data from anywhere)
_FIELD_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)


def _damaged(kind: str, error: Exception) -> TransformError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return TransformError(f"the checkpoint's '{kind}' transform is damaged ({first})")


def _import_providers() -> None:
    global _providers_imported
    if _providers_imported:
        return
    for module in PROVIDERS:  # each registers its kinds at import
        importlib.import_module(module)
    _providers_imported = True


def _short(value: Any) -> str:
    """At most 40 characters of a value from a file, for a one-line message."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."
