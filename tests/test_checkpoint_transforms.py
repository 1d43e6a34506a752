"""The checkpoint-transform registry (optkit.transforms): one owner per kind, lazy owner imports, versions,
and one clear error for what this optkit cannot replay."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optkit import transforms
from optkit.checkpoint import build_model, checkpoint_from_model, load_checkpoint, save_checkpoint
from optkit.errors import CheckpointError
from optkit.models import create_model
from optkit.transforms import TransformError

OPTKIT = Path(__file__).resolve().parents[1] / "optkit"
FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
OWNERS = {  # kind -> the module that owns it (docs/architecture.md, the transforms table)
    "fuse": "optkit.stages.fuse",
    "prune-structured": "optkit.stages.prune_structured",
    "sparsity": "optkit.stages.prune",
    "quantize": "optkit.quant.quantizers",
}


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers is gone after it."""
    transforms.known_kinds()  # owners imported (and registered) first
    monkeypatch.setattr(transforms, "_REGISTRY", dict(transforms._REGISTRY))
    return transforms._REGISTRY


def _tiny_ckpt(entries: list[dict]):
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3).eval()
    return checkpoint_from_model(model, ["a", "b", "c"], imgsz=32, transforms=entries)


def test_each_kind_is_registered_by_its_owner_with_its_constants():
    import importlib

    assert transforms.known_kinds() == sorted(OWNERS)
    for kind, owner in OWNERS.items():
        spec, module = transforms.get_transform(kind), importlib.import_module(owner)
        assert (spec.owner, spec.kind, spec.version) == (owner, module.KIND, module.VERSION)
        assert spec.replay is module.replay


def test_owners_are_imported_on_the_first_lookup_only():
    code = (
        "import sys, optkit.checkpoint as c, optkit.transforms as t\n"
        "owners = [m for m in t.PROVIDERS if m in sys.modules]\n"
        "assert not owners and 'torch' not in sys.modules, owners\n"
        "t.get_transform('fuse')\n"
        "assert all(m in sys.modules for m in t.PROVIDERS)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_unknown_kind_is_refused_in_one_line_naming_it():
    with pytest.raises(TransformError) as info:
        build_model(_tiny_ckpt([{"kind": "teleport"}]))
    message = str(info.value)
    assert "'teleport'" in message and "does not know" in message and "\n" not in message
    assert "fuse, prune-structured, quantize, sparsity" in message  # what it does know


def test_a_newer_version_is_refused_in_one_line_naming_both_versions():
    entry = {"kind": "fuse", "version": 99, "fused": []}
    with pytest.raises(TransformError) as info:
        build_model(_tiny_ckpt([entry]))
    message = str(info.value)
    assert "version 99 of the 'fuse' transform" in message and "up to version 1" in message
    assert "upgrade optkit" in message and "\n" not in message


def test_cli_refuses_an_unknown_kind_or_newer_version_in_one_error_line(cli, tmp_path):
    for name, entry, fragment in [
        ("teleport.pt", {"kind": "teleport"}, "'teleport', which this optkit"),
        ("future.pt", {"kind": "sparsity", "version": 2, "params": []}, "version 2 of the 'sparsity'"),
    ]:
        path = save_checkpoint(_tiny_ckpt([entry]), tmp_path / name)
        r = cli("fuse", path, "-o", tmp_path / f"out-{name}")
        assert r.code == 1 and r.err.count("error:") == 1 and fragment in r.err, r.err
        assert "Traceback" not in r.err and not (tmp_path / f"out-{name}").exists()


@pytest.mark.parametrize("version", ["2", 0, -1, True, 1.0, None])
def test_a_malformed_version_is_a_damaged_file(tmp_path, version):
    path = save_checkpoint(
        _tiny_ckpt([{"kind": "sparsity", "version": version, "params": []}]), tmp_path / "m.pt"
    )
    with pytest.raises(CheckpointError, match="'sparsity' transform has a bad version"):
        load_checkpoint(path)


def test_an_entry_without_version_is_version_1():
    assert transforms.entry_version({"kind": "fuse"}) == 1
    assert transforms.entry_version({"kind": "fuse", "version": 3}) == 3


def test_a_v2_reads_v1_entries_through_its_upgrade(registry):
    seen = []

    def upgrade(entry, version):  # v1 called the pairs "fused"
        pairs = entry.pop("fused")
        return {**entry, "version": 2, "pairs": pairs}

    def replay(model, entry):
        seen.append(entry)
        return model

    transforms.register_transform("test-v2", 2, replay, upgrade=upgrade)
    model = torch.nn.Linear(1, 1)
    assert transforms.replay(model, {"kind": "test-v2", "fused": ["a + b"]}) is model  # no version: 1
    assert transforms.replay(model, {"kind": "test-v2", "version": 2, "pairs": ["c + d"]}) is model
    assert seen == [
        {"kind": "test-v2", "version": 2, "pairs": ["a + b"]},
        {"kind": "test-v2", "version": 2, "pairs": ["c + d"]},
    ]
    with pytest.raises(TransformError, match="version 3 of the 'test-v2' transform"):
        transforms.replay(model, {"kind": "test-v2", "version": 3})


def test_registration_mistakes_are_caught_at_import(registry):
    def replay(model, entry):
        return model

    with pytest.raises(ValueError, match="upgrade="):  # a v2 must say how it reads v1 files
        transforms.register_transform("test-v2", 2, replay)
    with pytest.raises(ValueError, match="already registered by optkit.stages.fuse"):
        transforms.register_transform("fuse", 1, replay)  # this module is not fuse's owner
    with pytest.raises(ValueError, match="integer >= 1"):
        transforms.register_transform("test-v0", 0, replay)


def test_a_damaged_field_is_a_one_line_transform_error():
    with pytest.raises(TransformError, match=r"'fuse' transform is damaged"):
        build_model(_tiny_ckpt([{"kind": "fuse", "fused": 5}]))


# --- entries written today carry their kind's version ----------------------------------------------


def test_fuse_and_sparsity_entries_carry_their_version():
    from optkit.stages import fuse, prune

    assert fuse.fuse_transform(["model.0.conv + model.0.bn"]) == {
        "kind": "fuse",
        "version": fuse.VERSION,
        "fused": ["model.0.conv + model.0.bn"],
    }
    assert fuse.fuse_transform([]) is None  # nothing folded: nothing to replay
    entry = prune.sparsity_transform(["model.0.conv.weight"], amount=0.5, scope="layer")
    assert (entry["kind"], entry["version"]) == ("sparsity", prune.VERSION)


def test_structured_prune_entry_carries_its_version_and_rebuilds(tmp_path):
    from optkit.checkpoint import derived_checkpoint
    from optkit.stages import prune_structured as ps

    model = create_model("test-tiny", num_classes=3).eval()
    pruned, entry = ps.prune_structured(model, ps.StructuredPruneConfig(amount=0.5, round_to=1, imgsz=32))
    assert (entry["kind"], entry["version"]) == ("prune-structured", ps.VERSION)
    ckpt = derived_checkpoint(checkpoint_from_model(model, ["a", "b", "c"], 32), pruned, entry)
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "p.pt"))
    assert loaded.transforms[-1]["version"] == ps.VERSION
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(build_model(loaded)(x), pruned(x))


def test_quantize_entry_carries_its_version():
    from optkit.quant import quantizers
    from optkit.quant.config import QuantConfig

    old = load_checkpoint(FIXTURES / "int8.pt")
    model = build_model(old)  # calibrated quantizers, amax from the file
    entry = quantizers.transform_entry(model, QuantConfig(**old.transforms[-1]["config"]))
    assert (entry["kind"], entry["version"]) == ("quantize", quantizers.VERSION)


def test_no_module_builds_a_transform_entry_by_hand():
    """Entries are built by their owners from KIND and VERSION: a dict literal `{"kind": "<literal>"}`
    anywhere in the package would be an entry without its owner's version."""
    found = []
    for path in sorted(OPTKIT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and any(
                _constant(k) == "kind" and isinstance(_constant(v), str)
                for k, v in zip(node.keys, node.values, strict=True)
            ):
                found.append(f"{path.relative_to(OPTKIT.parent)}:{node.lineno}")
    assert not found, found


def _constant(node):
    return node.value if isinstance(node, ast.Constant) else None
