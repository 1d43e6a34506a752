"""An OPTKIT_CACHE where builtin datasets cannot be written: one line that names OPTKIT_CACHE."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ckpt(tmp_path) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data.shapes import CLASSES
    from optkit.models import create_model

    model = create_model("test-tiny", num_classes=len(CLASSES))
    return save_checkpoint(checkpoint_from_model(model, list(CLASSES), 64), tmp_path / "s8.pt")


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-folder"
    path.write_text("a file where the cache folder should be\n")
    return path


@pytest.mark.parametrize(
    "make_cache",
    [
        pytest.param(_a_file, id="a-file"),
        pytest.param(lambda tmp_path: Path("/proc/optkit-cache"), id="proc"),  # mkdir fails even for root
    ],
)
def test_unwritable_cache_is_one_line_naming_optkit_cache(cli, tmp_path, ckpt, monkeypatch, make_cache):
    cache = make_cache(tmp_path)
    monkeypatch.setenv("OPTKIT_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("val", ckpt, "--data", "builtin:shapes", "--workers", "0")
    lines = r.err.strip().splitlines()
    assert r.code == 1, r.err
    assert len(lines) == 1 and lines[0].startswith("error: OPTKIT_CACHE="), r.err
    assert str(cache) in lines[0] and "writable folder" in lines[0] and "unexpected" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


def test_cache_chosen_by_the_caller_names_the_setting_to_change(tmp_path, monkeypatch):
    from optkit.data.shapes import builtin_root
    from optkit.errors import ConfigError

    monkeypatch.delenv("OPTKIT_CACHE")
    with pytest.raises(ConfigError, match="set OPTKIT_CACHE to a writable folder"):
        builtin_root("shapes", cache_dir=_a_file(tmp_path), log=lambda message: None)
