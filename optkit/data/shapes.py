"""The built-in synthetic dataset `builtin:shapes`: eight geometric shapes on textured backgrounds.

Every image is a pure function of (seed, split, index), so a generation is byte-identical whatever the
number of processes. Shapes are chosen to stay distinguishable under any rotation (there is a square
but no diamond; the bar is a square stretched 3-4.5x). Each image gets a random shape size (35-80 % of
the side, always fully inside), position, rotation and colour, a random background texture (gradient,
stripes or blotches between two colours) that keeps a minimum colour distance to the shape, and pixel
noise. Shapes are drawn on a 4x canvas and box-downsampled, which anti-aliases their edges.

The folder is written atomically: generated into a temp folder beside the target, marked complete with
`.complete` (JSON of the generator version and parameters), then renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from optkit.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

VERSION = 2  # bump whenever the pixels change: the cache folder name and marker carry it
MARKER = ".complete"
CLASSES = ("bar", "circle", "crescent", "cross", "ring", "square", "star", "triangle")
SPLITS = ("train", "val")

SUPERSAMPLE = 4  # shapes are drawn at 4x the output size, then box-averaged (anti-aliasing)
SIZE_RANGE = (0.35, 0.80)  # shape's circumscribed diameter, fraction of the image side
MIN_CONTRAST = 90.0  # min RGB distance (0-255 scale) between shape colour and any background colour
TEXTURE_CONTRAST = 60.0  # max per-channel difference between the two background colours (0-255 scale)
NOISE_SIGMA = (2.0, 10.0)  # per-image Gaussian pixel noise, 0-255 scale
PARALLEL_MIN_IMAGES = 1024  # below this, a process pool costs more than it saves


# ---------------------------------------------------------------------------------------------- shapes


def _polygon(points: np.ndarray, angle: float, radius: float, center: tuple[float, float]) -> list:
    """Rotate `points` (N, 2), scale so the farthest vertex lies at `radius`, move to `center`."""
    c, s = math.cos(angle), math.sin(angle)
    rotated = points @ np.array([[c, s], [-s, c]])
    rotated *= radius / np.hypot(rotated[:, 0], rotated[:, 1]).max()
    return [(center[0] + x, center[1] + y) for x, y in rotated]


def _regular(n: int, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Vertices of a regular n-gon (or star when `radii` alternates) on the unit circle."""
    k = n * len(radii)
    t = np.arange(k) * 2 * math.pi / k
    r = np.resize(np.array(radii), k)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm: float) -> np.ndarray:
    """A plus sign of half-width `arm` (fraction of the arm length) as a 12-vertex polygon."""
    a = arm
    return np.array(
        [
            (a, 1),
            (a, a),
            (1, a),
            (1, -a),
            (a, -a),
            (a, -1),
            (-a, -1),
            (-a, -a),
            (-1, -a),
            (-1, a),
            (-a, a),
            (-a, 1),
        ],
        dtype=np.float64,
    )


def _disc(draw: ImageDraw.ImageDraw, center: tuple[float, float], radius: float, fill: int) -> None:
    x, y = center
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    name: str,
    center: tuple[float, float],
    radius: float,
    angle: float,
    rng: np.random.Generator,
) -> None:
    """Draw class `name` in white (255) on a black mask; everything stays within `radius` of `center`."""
    if name == "circle":
        _disc(draw, center, radius, 255)
    elif name == "ring":
        _disc(draw, center, radius, 255)
        _disc(draw, center, radius * rng.uniform(0.50, 0.65), 0)  # hole shows the background
    elif name == "crescent":
        _disc(draw, center, radius, 255)
        offset = radius * rng.uniform(0.45, 0.65)
        cut = (center[0] + offset * math.cos(angle), center[1] + offset * math.sin(angle))
        _disc(draw, cut, radius * rng.uniform(0.80, 0.95), 0)
    else:
        points = {
            "triangle": lambda: _regular(3),
            "square": lambda: _regular(4),
            "star": lambda: _regular(5, (1.0, rng.uniform(0.38, 0.48))),
            "cross": lambda: _cross(rng.uniform(0.24, 0.34)),
            "bar": lambda: np.array([(1, 1), (1, -1), (-1, -1), (-1, 1)]) * (1.0, 1 / rng.uniform(3.0, 4.5)),
        }[name]()
        draw.polygon(_polygon(points, angle, radius, center), fill=255)


def _shape_mask(name: str, imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """Float mask (imgsz, imgsz) in [0, 1]: random size, position and rotation, anti-aliased edges."""
    big = imgsz * SUPERSAMPLE
    radius = rng.uniform(*SIZE_RANGE) * big / 2
    margin = radius + SUPERSAMPLE  # keep one output pixel of background around the shape
    center = (rng.uniform(margin, big - margin), rng.uniform(margin, big - margin))
    mask = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(mask), name, center, radius, rng.uniform(0, 2 * math.pi), rng)
    # box-average SUPERSAMPLE x SUPERSAMPLE blocks: exact area coverage per output pixel
    blocks = np.asarray(mask, dtype=np.float32).reshape(imgsz, SUPERSAMPLE, imgsz, SUPERSAMPLE)
    return blocks.mean(axis=(1, 3)) / 255.0


# ---------------------------------------------------------------------------------------------- textures


def _texture(imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """Blend weights (imgsz, imgsz) in [0, 1] for a gradient, stripes or blotches background."""
    y, x = np.mgrid[0:imgsz, 0:imgsz].astype(np.float32) / imgsz  # image-side units
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * math.pi)
        t = math.cos(a) * x + math.sin(a) * y
        t -= t.min()
        return t / max(float(t.max()), 1e-6)
    if kind == 1:  # soft stripes: 2-7 periods per image side, sharpened sine
        a, freq, phase = rng.uniform(0, math.pi), rng.uniform(2, 7), rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * freq * (math.cos(a) * x + math.sin(a) * y) + phase)
        return np.clip(wave * rng.uniform(1.0, 3.0), -1, 1) * 0.5 + 0.5
    # blotches: 3-7 Gaussian blobs, 8-25 % of the side wide, normalised to [0, 1]
    t = np.zeros((imgsz, imgsz), np.float32)
    for _ in range(rng.integers(3, 8)):
        cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.25)
        t += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return t / max(float(t.max()), 1e-6)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from colour `p` to the colour segment a-b (every background blend lies on it)."""
    ab = b - a
    u = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-6), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + u * ab)))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two background colours close to each other (a subtle texture) and a shape colour at least
    MIN_CONTRAST away from every blend of them, so the shape, not the texture, carries the label."""
    c1 = rng.uniform(0, 255, 3)
    c2 = np.clip(c1 + rng.uniform(-TEXTURE_CONTRAST, TEXTURE_CONTRAST, 3), 0, 255)
    for _ in range(100):
        shape = rng.uniform(0, 255, 3)
        if _segment_distance(shape, c1, c2) >= MIN_CONTRAST:
            return shape, c1, c2
    # a mid-grey background can leave little room: use the colour-space opposite of c1
    return np.where(c1 < 128, 255.0, 0.0), c1, c2


def render(name: str, imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB image (imgsz, imgsz, 3) of shape class `name`."""
    mask = _shape_mask(name, imgsz, rng)[..., None]
    shape, c1, c2 = _colours(rng)
    background = c1 + _texture(imgsz, rng)[..., None] * (c2 - c1)
    img = background * (1.0 - mask) + shape * mask
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(*NOISE_SIGMA)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)  # +0.5: round, not truncate


# ---------------------------------------------------------------------------------------------- folders


def _split_sizes(n_train: int, n_val: int) -> dict[str, int]:
    return {"train": n_train, "val": n_val}


def _write_chunk(job: tuple[str, str, int, int, int, int]) -> None:
    """Write images [start, stop) of one split. Image i is class i % 8, seeded by (seed, split, i)."""
    folder, split, start, stop, imgsz, seed = job
    split_id = SPLITS.index(split)
    for i in range(start, stop):
        name = CLASSES[i % len(CLASSES)]
        rng = np.random.default_rng([seed, split_id, i])
        img = Image.fromarray(render(name, imgsz, rng))
        img.save(Path(folder, split, name, f"{i:05d}.png"), compress_level=1)  # level 1: fast, same size


def _jobs(folder: Path, sizes: dict[str, int], imgsz: int, seed: int, chunk: int) -> list:
    return [
        (str(folder), split, start, min(start + chunk, n), imgsz, seed)
        for split, n in sizes.items()
        for start in range(0, n, chunk)
    ]


def _cpu_count() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))  # respects taskset / container CPU limits
    return os.cpu_count() or 1


def _write_images(folder: Path, sizes: dict[str, int], imgsz: int, seed: int) -> None:
    for split in sizes:
        for name in CLASSES:
            (folder / split / name).mkdir(parents=True)
    total, procs = sum(sizes.values()), _cpu_count()
    if total < PARALLEL_MIN_IMAGES or procs == 1:
        for job in _jobs(folder, sizes, imgsz, seed, chunk=max(total, 1)):
            _write_chunk(job)
        return
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_write_chunk, _jobs(folder, sizes, imgsz, seed, chunk=256)))


def _params(imgsz: int, n_train: int, n_val: int, seed: int) -> dict:
    return {
        "generator": "optkit.data.shapes",
        "version": VERSION,
        "imgsz": imgsz,
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "classes": list(CLASSES),
    }


def _check_args(imgsz: int, n_train: int, n_val: int) -> None:
    if imgsz < 16:
        raise ConfigError(f"builtin:shapes needs imgsz >= 16, got {imgsz}")
    if n_train < len(CLASSES) or n_val < len(CLASSES):
        raise ConfigError(
            f"builtin:shapes needs at least {len(CLASSES)} train and val images (one per class)"
        )


def generate_shapes(
    root: Path, imgsz: int = 64, n_train: int = 8000, n_val: int = 1600, seed: int = 0
) -> None:
    """Write the shapes ImageFolder to `root` (`train/<class>/<i>.png`, `val/...`), replacing any old one.

    Classes are balanced (image i is class i % 8). The same arguments give byte-identical files.
    """
    _check_args(imgsz, n_train, n_val)
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_images(tmp, _split_sizes(n_train, n_val), imgsz, seed)
        (tmp / MARKER).write_text(json.dumps(_params(imgsz, n_train, n_val, seed), indent=1) + "\n")
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing `target` is moved aside first, then deleted."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def is_complete(root: Path, params: dict) -> bool:
    """True when `root` holds a finished generation with exactly these parameters."""
    try:
        return json.loads((Path(root) / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- builtins


@dataclass(frozen=True)
class Builtin:
    """A generated dataset that `builtin:<name>` resolves to."""

    generate: Callable[..., None]  # generate(root, imgsz=, n_train=, n_val=, seed=)
    version: int
    n_train: int
    n_val: int
    seed: int
    description: str


BUILTINS: dict[str, Builtin] = {
    "shapes": Builtin(
        generate_shapes,
        VERSION,
        n_train=8000,
        n_val=1600,
        seed=0,
        description="8 geometric shapes on textured backgrounds, 8000 train / 1600 val",
    ),
}


def cache_root(cache_dir: Path | None = None) -> Path:
    """`cache_dir`, else $OPTKIT_CACHE, else $XDG_CACHE_HOME/optkit, else ~/.cache/optkit."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("OPTKIT_CACHE"):
        return Path(os.environ["OPTKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "optkit"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so concurrent processes (e.g. torchrun ranks) generate a dataset only once."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps folders whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def builtin_root(
    name: str, imgsz: int = 64, cache_dir: Path | None = None, *, log: Callable[[str], None] | None = None
) -> Path:
    """Folder of builtin dataset `name` at `imgsz` px, generated on first use and reused afterwards.

    The one-line "generating ..." message goes to `log` when given, else to this module's logger (INFO).
    """
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise DatasetError(f"unknown builtin dataset 'builtin:{name}' (known: {known})")
    spec = BUILTINS[name]
    root = cache_root(cache_dir) / "datasets" / f"{name}-v{spec.version}-{imgsz}"
    params = _params(imgsz, spec.n_train, spec.n_val, spec.seed)
    if is_complete(root, params):
        return root
    with _file_lock(root.parent / f".{root.name}.lock"):
        if not is_complete(root, params):  # another process may have finished while we waited
            message = (
                f"generating builtin:{name} ({spec.n_train} train / {spec.n_val} val, {imgsz} px) in {root}"
            )
            (log or logger.info)(message)
            spec.generate(root, imgsz=imgsz, n_train=spec.n_train, n_val=spec.n_val, seed=spec.seed)
    return root
