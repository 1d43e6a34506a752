"""The built-in synthetic dataset: classes, determinism, atomic generation, caching."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from optkit.data.shapes import CLASSES, MARKER, builtin_root, generate_shapes


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_classes_balanced_sizes_and_determinism(tmp_path):
    generate_shapes(tmp_path / "a", imgsz=32, n_train=80, n_val=16)
    generate_shapes(tmp_path / "b", imgsz=32, n_train=80, n_val=16)
    root = tmp_path / "a"
    assert len(CLASSES) >= 8
    for split, n in (("train", 80), ("val", 16)):
        counts = {c: len(list((root / split / c).glob("*.png"))) for c in CLASSES}
        assert set(counts.values()) == {n // len(CLASSES)}
    img = Image.open(next((root / "train" / "star").glob("*.png")))
    assert img.size == (32, 32) and img.mode == "RGB"
    assert json.loads((root / MARKER).read_text())["n_train"] == 80
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_images_differ_and_shape_contrasts_with_background(tmp_path):
    generate_shapes(tmp_path / "s", imgsz=32, n_train=16, n_val=8)
    arrays = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "s" / "train").rglob("*.png"))]
    assert len({a.tobytes() for a in arrays}) == len(arrays)
    assert all(a.std() > 10 for a in arrays)  # not blank


def test_builtin_is_generated_once_and_reused(tmp_path, monkeypatch):
    import optkit.data.shapes as shapes

    monkeypatch.setitem(
        shapes.BUILTINS,
        "shapes",
        shapes.Builtin(generate_shapes, 1, n_train=16, n_val=8, seed=0, description=""),
    )
    messages = []
    root = builtin_root("shapes", imgsz=32, cache_dir=tmp_path, log=messages.append)
    mtime = (root / MARKER).stat().st_mtime_ns
    assert builtin_root("shapes", imgsz=32, cache_dir=tmp_path, log=messages.append) == root
    assert (root / MARKER).stat().st_mtime_ns == mtime and len(messages) == 1
    # a half-written folder (no marker) is regenerated, not reused
    (root / MARKER).unlink()
    builtin_root("shapes", imgsz=32, cache_dir=tmp_path, log=messages.append)
    assert (root / MARKER).exists() and len(messages) == 2
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temp folders left behind


def test_remove_tree_outlasts_a_writer_still_adding_files(tmp_path):
    """A killed build's worker may write after the lock has passed on: one rmtree then leaves the folder
    (a file added while rmtree empties train/ makes its rmdir fail), the retries do not."""
    import threading
    import time

    from optkit.data.shapes import _remove_tree

    folder = tmp_path / ".shapes-v2-64.tmp-x"
    (folder / "train").mkdir(parents=True)
    for i in range(3000):  # enough that the writer gets the GIL while rmtree runs
        (folder / "train" / f"old{i}.png").write_bytes(b"x")
    stop = time.monotonic() + 0.3  # the writer adds files for 0.3 s, into folders it does not recreate

    def writer() -> None:
        i = 0
        while time.monotonic() < stop:
            try:
                (folder / "train" / f"{i}.png").write_bytes(b"x")
            except FileNotFoundError:
                pass
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    _remove_tree(folder)
    thread.join()
    assert not folder.exists()
