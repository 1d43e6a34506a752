"""Fixtures for the foreign-checkpoint tests (builders live in foreign_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from foreign_helpers import purge_family, write_family


@pytest.fixture
def code_dir(tmp_path) -> Path:
    """The yolo_like family's source in tmp_path/code; not on sys.path, not imported when the test starts."""
    purge_family()
    yield write_family(tmp_path / "code")
    purge_family()
