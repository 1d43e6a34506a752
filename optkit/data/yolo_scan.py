"""Scan one split of a YOLO-format dataset once: check and size every image, parse and check every label
file, in parallel; cache the result beside the labels and reuse it while no file has changed.

An image is opened with Pillow: its size comes from the header (EXIF orientation 5-8 swaps width and height,
as `folder.read_rgb` turns the image upright), then it is verified and decoded in full (a truncated JPEG
passes `verify()` and fails only when decoded). A label file holds rows `class cx cy w h`; a row that is
not exactly that, or an image Pillow cannot decode, is a `Problem` (file, line, what). The scan only
records problems; `yolo_format` decides whether they stop the load or drop their images. A row is bad
when it has not 5 columns, a value that is not a finite number, a class that is not an integer in
[0, nc), a coordinate outside [0, 1] by more than COORD_TOLERANCE (values within it are clipped: converters
round), a width or height <= 0, or when it repeats an earlier row of its file exactly. A box whose edges
cross the image border (cx + w/2 > 1) is kept as written.

The cache is one `.npz` (numbers and a JSON header, no pickle) keyed by SCAN_VERSION, the number of classes
(class ids are checked against it), the image paths in order and the size and modification time (ns) of
every image and label file: any change re-scans the whole split. A cache that cannot be read (damaged,
another version, a folder in its place) is scanned over; one that cannot be written is no error, the
caller's log line says so.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from optkit.io import WriteError, atomic_open

SCAN_VERSION = 1  # bump when what a scan records (or how it checks a row) changes: old caches are re-scanned
CACHE_SUFFIX = ".optkit.cache"
COORD_TOLERANCE = (
    1e-3  # normalised units (0.64 px at 640): converters' rounding; values within it are clipped
)
MAX_THREADS = 8  # Pillow releases the GIL while it decodes; more threads only queue on the disk
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 rotate the image a quarter turn (width <-> height)
COLUMNS = ("class", "cx", "cy", "w", "h")
MISSING = (-1, -1)  # (size, mtime_ns) of a file that does not exist (a background image's label file)


class Problem(NamedTuple):
    """One reason an image cannot be used as it is: `line` is the label file's line (1-based), 0 for a
    problem with a whole file (an image that cannot be decoded, a label file that is not text)."""

    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}" if self.line else f"{self.file}: {self.what}"


@dataclass
class ScannedImage:
    shape: tuple[int, int]  # (width, height) upright; (0, 0) when the image cannot be read
    labels: np.ndarray  # float32 [n, 5] (class, cx, cy, w, h): the rows without a problem
    has_label_file: bool
    problems: list[Problem] = field(default_factory=list)


@dataclass
class SplitScan:
    images: list[str]
    scanned: list[ScannedImage]
    note: str  # where the result came from and went: "read from cache X", "scanned; cached in X", ...


# ---------------------------------------------------------------------------------------------- one image


# What Pillow raises for a file it cannot decode: OSError (UnidentifiedImageError, "image file is
# truncated"), SyntaxError (PNG CRC / chunk errors in verify()), ValueError, EOFError, and from some
# plugins on malformed headers IndexError or struct.error; DecompressionBombError for absurd sizes.
def _image_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        struct.error,
        Image.DecompressionBombError,
    )


def image_shape(path: str) -> tuple[tuple[int, int], Problem | None]:
    """((width, height) upright, None), or ((0, 0), the problem) for an image Pillow cannot decode."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums, first thing after open; leaves the object unusable
        with Image.open(path) as img:
            width, height = img.size  # from the header
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)  # (a PNG's EXIF may follow its pixels)
            img.load()  # every pixel: what verify() misses (a truncated JPEG)
    except FileNotFoundError:
        return (0, 0), Problem(path, 0, "no such image file")
    except _image_errors() as e:
        return (0, 0), Problem(path, 0, f"cannot decode the image ({type(e).__name__}: {e})")
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return (width, height), None


def parse_row(tokens: Sequence[str], nc: int) -> tuple[list[float] | None, str]:
    """(class, cx, cy, w, h) with coordinates clipped to [0, 1], or (None, what is wrong with it)."""
    if len(tokens) != 5:
        polygon = len(tokens) > 5 and len(tokens) % 2 == 1
        hint = "; segmentation polygons (class x1 y1 x2 y2 ...) are not read" if polygon else ""
        return None, f"{len(tokens)} columns, expected 5 (class cx cy w h){hint}"
    values = []
    for name, token in zip(COLUMNS, tokens, strict=True):
        try:
            value = float(token)
        except ValueError:
            return None, f"{name} '{token}' is not a number"
        if not math.isfinite(value):
            return None, f"{name} '{token}' is not a finite number"
        values.append(value)
    cls = values[0]
    if cls != int(cls):
        return None, f"class '{tokens[0]}' is not an integer"
    if not 0 <= cls < nc:
        return None, f"class {int(cls)} is outside 0..{nc - 1} (the dataset has {nc} classes)"
    for name, token, value in zip(COLUMNS[1:], tokens[1:], values[1:], strict=True):
        if not -COORD_TOLERANCE <= value <= 1 + COORD_TOLERANCE:
            return None, f"{name} {token} is outside [0, 1] (boxes are fractions of the image size)"
    if values[3] <= 0 or values[4] <= 0:
        return None, f"box of zero or negative size (w {tokens[3]}, h {tokens[4]})"
    return [cls, *(min(max(v, 0.0), 1.0) for v in values[1:])], ""


def read_labels(path: str, nc: int) -> tuple[np.ndarray, bool, list[Problem]]:
    """(rows without a problem as float32 [n, 5], whether the file exists, the problems). A missing or
    empty file is a background image; blank lines are skipped; a row repeated exactly is a problem."""
    empty = np.zeros((0, 5), np.float32)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return empty, False, []
    except OSError as e:
        return empty, True, [Problem(path, 0, f"cannot read the label file ({e.strerror})")]
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark some Windows editors write is not a column
    except UnicodeDecodeError:
        return empty, True, [Problem(path, 0, "not a text file (rows 'class cx cy w h' expected)")]
    rows, first_seen, problems = [], {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        row, what = parse_row(tokens, nc)
        if row is None:
            problems.append(Problem(path, number, what))
            continue
        key = tuple(float(t) for t in tokens)  # the row as written (before clipping)
        if key in first_seen:
            problems.append(Problem(path, number, f"duplicate of line {first_seen[key]}"))
            continue
        first_seen[key] = number
        rows.append(row)
    labels = np.array(rows, np.float32).reshape(-1, 5)
    return labels, True, problems


def scan_image(image: str, label_file: str, nc: int) -> ScannedImage:
    shape, image_problem = image_shape(image)
    labels, has_label_file, problems = read_labels(label_file, nc)
    if image_problem is not None:
        problems.insert(0, image_problem)
    return ScannedImage(shape, labels, has_label_file, problems)


# ---------------------------------------------------------------------------------------------- a split


def _threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, cpus))


def file_stats(paths: Sequence[str]) -> np.ndarray:
    """int64 [n, 2]: (size in bytes, modification time in ns) of each file, MISSING for one that is not."""
    stats = np.empty((len(paths), 2), np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
            stats[i] = (st.st_size, st.st_mtime_ns)
        except OSError:
            stats[i] = MISSING
    return stats


def scan_split(images: list[str], label_files: list[str], nc: int, cache_path: Path) -> SplitScan:
    """Every image of a split and its label file, from the cache when nothing changed, else scanned in
    parallel (and the cache rewritten)."""
    # the key is taken before the scan: a file changed while it runs differs next time and is re-scanned
    key = np.concatenate([file_stats(images), file_stats(label_files)], axis=1)
    cached = read_cache(cache_path, images, nc, key)
    if cached is not None:
        return SplitScan(images, cached, f"read from cache {cache_path}")
    with ThreadPoolExecutor(_threads()) as pool:
        scanned = list(pool.map(scan_image, images, label_files, [nc] * len(images)))
    return SplitScan(images, scanned, "scanned; " + write_cache(cache_path, images, nc, key, scanned))


# ---------------------------------------------------------------------------------------------- the cache


def write_cache(path: Path, images: list[str], nc: int, key: np.ndarray, scanned: list[ScannedImage]) -> str:
    """Write the cache atomically; returns what the log line says about it. A folder that does not exist
    is not created (the dataset is the user's), and a write that fails is no error."""
    if not path.parent.is_dir():
        return f"not cached: {path.parent} is not a folder"
    meta = {
        "version": SCAN_VERSION,
        "nc": nc,
        "images": images,
        "problems": [[i, *p] for i, s in enumerate(scanned) for p in s.problems],
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "key": key,
        "shapes": np.array([s.shape for s in scanned], np.int64).reshape(-1, 2),
        "counts": np.array([len(s.labels) for s in scanned], np.int64),
        "has_label_file": np.array([s.has_label_file for s in scanned], bool),
        "labels": np.concatenate([s.labels for s in scanned] + [np.zeros((0, 5), np.float32)]),
    }
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)
    except (WriteError, OSError) as e:  # a read-only dataset, a full disk: scanning again next time is all
        return f"not cached: {e}"
    return f"cached in {path}"


def read_cache(path: Path, images: list[str], nc: int, key: np.ndarray) -> list[ScannedImage] | None:
    """The cached scan if it was made by this version, for these classes, images and file stats; else
    None (no cache, another version, a changed file, or a damaged cache)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("version") != SCAN_VERSION or meta.get("nc") != nc or meta.get("images") != images:
                return None
            if not np.array_equal(z["key"], key):
                return None
            return _unpack(meta, z["shapes"], z["counts"], z["has_label_file"], z["labels"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # missing, a folder, truncated, or not ours: scan again


def _unpack(meta: dict, shapes, counts, has_label_file, labels) -> list[ScannedImage] | None:
    n = len(meta["images"])
    if shapes.shape != (n, 2) or counts.shape != (n,) or has_label_file.shape != (n,):
        return None
    if labels.dtype != np.float32 or labels.shape != (int(counts.sum()), 5) or (counts < 0).any():
        return None
    starts = np.concatenate([[0], np.cumsum(counts)])
    scanned = [
        ScannedImage((int(w), int(h)), labels[starts[i] : starts[i + 1]].copy(), bool(has_label_file[i]))
        for i, (w, h) in enumerate(shapes)
    ]
    for i, file, line, what in meta["problems"]:
        scanned[i].problems.append(Problem(file, line, what))
    return scanned
