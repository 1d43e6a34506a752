"""The built-in synthetic dataset `builtin:shapes`: eight geometric shapes on textured backgrounds.

Every image is a pure function of (seed, split, index), so a generation is byte-identical whatever the
number of processes. Shapes are chosen to stay distinguishable under any rotation (there is a square
but no diamond; the bar is a square stretched 3-4.5x). Each image gets a random shape size (35-80 % of
the side, always fully inside), position, rotation and colour, a random background texture (gradient,
stripes or blotches between two colours) that keeps a minimum colour distance to the shape, and pixel
noise. Shapes are drawn on a 4x canvas and box-downsampled, which anti-aliases their edges.

The folder is written atomically: generated into a temp folder beside the target, marked complete with
`.complete` (JSON of the generator version and parameters), then renamed into place.

A killed build never blocks the next one: the generation workers die with the process that started them,
the build lock is one the kernel drops when its holder dies (however it dies), a process that waits for
the lock says for whom, and the next build removes the temp folders of killed ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
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
        _exit_if_orphaned()
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
    _run_in_pool(_jobs(folder, sizes, imgsz, seed, chunk=256), procs)


# ---------------------------------------------------------------------------------------------- workers

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal a process gets when its parent dies
_parent_pid: int | None = None  # set in a generation worker: the process it must not outlive


def _run_in_pool(jobs: list, procs: int) -> None:
    """Run `_write_chunk` over `jobs` in `procs` worker processes. Whatever stops the build (Ctrl-C,
    SIGTERM, a failed chunk) kills the workers at once: none keeps writing, or holds the caller's
    stdout/stderr, after the build has ended."""
    pool = ProcessPoolExecutor(procs, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        for _ in pool.map(_write_chunk, jobs):
            pass
    except BaseException:
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's workers. ProcessPoolExecutor's shutdown() would first let the running chunks
    finish (seconds each); Python 3.14 has kill_workers(), older versions only the private _processes."""
    if hasattr(pool, "kill_workers"):
        pool.kill_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _init_worker(builder_pid: int) -> None:
    """First thing in each generation worker: make it die with the process that builds the dataset.

    The builder alone decides when a build stops, and then kills its workers (_run_in_pool): Ctrl-C
    reaches the whole process group, so workers ignore SIGINT; SIGTERM gets its default action back in
    place of the CLI's handler that fork copied. If the builder dies without cleaning up (SIGKILL, a
    crash), Linux kills the worker (PR_SET_PDEATHSIG); elsewhere, or if the builder died before that
    was set, the worker finds its parent changed before its next image (_exit_if_orphaned) and exits."""
    global _parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    _parent_pid = os.getppid()  # the builder, or the fork server that started this worker for it
    if not _pid_alive(builder_pid):  # it died before the line above: the parent seen is already a stranger
        os._exit(1)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends. The kernel ties this to the thread that
    forked the worker: ProcessPoolExecutor forks its workers from the thread that first submits work,
    the builder's own thread, which lives until the build has ended."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc: _exit_if_orphaned remains
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _exit_if_orphaned() -> None:
    """In a generation worker whose parent has gone (it was re-parented): exit at once, writing nothing."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


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
    imgsz: int | None = None  # pixels it is always generated at; None: the imgsz asked for
    params: Callable[..., dict] = _params  # params(imgsz, n_train, n_val, seed): a finished build's marker


def _from_shapes_det(name: str) -> Callable:
    """optkit.data.shapes_det.<name>, imported at the first call (that module imports this one)."""

    def call(*args, **kwargs):
        from optkit.data import shapes_det

        return getattr(shapes_det, name)(*args, **kwargs)

    return call


BUILTINS: dict[str, Builtin] = {
    "shapes": Builtin(
        generate_shapes,
        VERSION,
        n_train=8000,
        n_val=1600,
        seed=0,
        description="8 geometric shapes on textured backgrounds, 8000 train / 1600 val",
    ),
    # the values of shapes_det.VERSION, N_TRAIN, N_VAL, SEED, IMGSZ (tests/data/test_shapes_det.py checks)
    "shapes-det": Builtin(
        _from_shapes_det("generate_shapes_det"),
        3,
        n_train=3000,
        n_val=300,
        seed=0,
        description="detection: 1-4 of 6 shapes per image, YOLO folder with data.yaml, 3000 train / 300 val",
        imgsz=256,
        params=_from_shapes_det("params"),
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


_in_process_lock = threading.Lock()  # POSIX record locks do not exclude threads of one process


@contextlib.contextmanager
def _build_lock(path: Path, waiting: str, log: Callable[[str], None]) -> Iterator[None]:
    """Exclusive lock so that concurrent processes (e.g. torchrun ranks) build a dataset only once.

    A POSIX record lock (lockf), not flock: it belongs to this process alone, so the generation workers
    it forks do not hold it (forked children share a flock), and the kernel drops it when this process
    ends, however it ends: a killed build never blocks the next one. The holder writes its pid into the
    file; a process that has to wait logs `waiting` with that pid, then waits.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps folders whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _in_process_lock:
        # opened once and closed only at the end: closing any descriptor of the file drops a POSIX lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):  # not "someone else holds it"
                    raise
                log(waiting.format(holder=_holder(fd)))
                fcntl.lockf(fd, fcntl.LOCK_EX)  # Ctrl-C and SIGTERM interrupt the wait
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """'pid N' of the process that holds the build lock (its pid is in the file), or '' if unknown."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (pid {text})" if text.isdigit() else ""


def _remove_leftovers(root: Path) -> None:
    """Remove the temp and trash folders of builds of `root` that were killed. Call with the build lock
    held: then no build of `root` is under way, and every such folder is a leftover."""
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*"):
        for leftover in root.parent.glob(pattern):
            _remove_tree(leftover)


def _remove_tree(folder: Path, timeout: float = 5.0) -> None:
    """Delete `folder`, again every 50 ms until it is gone or `timeout` s have passed. A killed builder's
    lock is released before its workers get their PR_SET_PDEATHSIG kill (Linux closes a dying process's
    files before it signals its children), so a worker may still add an image after one rmtree."""
    deadline = time.monotonic() + timeout
    shutil.rmtree(folder, ignore_errors=True)
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        shutil.rmtree(folder, ignore_errors=True)


def builtin_root(
    name: str, imgsz: int = 64, cache_dir: Path | None = None, *, log: Callable[[str], None] | None = None
) -> Path:
    """Folder of builtin dataset `name` at `imgsz` px, generated on first use and reused afterwards.
    A builtin with a size of its own (`Builtin.imgsz`, e.g. shapes-det) is generated at that size instead.

    The one-line "generating ..." (or "waiting for ...") message goes to `log` when given, else to this
    module's logger (INFO).
    """
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise DatasetError(f"unknown builtin dataset 'builtin:{name}' (known: {known})")
    spec = BUILTINS[name]
    imgsz = spec.imgsz or imgsz
    root = cache_root(cache_dir) / "datasets" / f"{name}-v{spec.version}-{imgsz}"
    params = spec.params(imgsz, spec.n_train, spec.n_val, spec.seed)
    if is_complete(root, params):
        return root
    log = log or logger.info
    waiting = f"waiting for another optkit process{{holder}} that is generating builtin:{name} in {root}"
    generating = f"generating builtin:{name} ({spec.n_train} train / {spec.n_val} val, {imgsz} px) in {root}"
    try:
        with _build_lock(root.parent / f".{root.name}.lock", waiting, log):
            if not is_complete(root, params):  # another process may have finished while we waited
                _remove_leftovers(root)
                log(generating)
                spec.generate(root, imgsz=imgsz, n_train=spec.n_train, n_val=spec.n_val, seed=spec.seed)
    except OSError as e:  # read-only, full, or not a folder: say which setting chose the place
        raise ConfigError(_unwritable_cache(name, root, e, cache_dir)) from None
    return root


def _unwritable_cache(name: str, root: Path, e: OSError, cache_dir: Path | None) -> str:
    reason = e.strerror or str(e)
    if cache_dir is None and os.environ.get("OPTKIT_CACHE"):
        return (
            f"OPTKIT_CACHE={os.environ['OPTKIT_CACHE']}: cannot write builtin:{name} to {root} ({reason}); "
            "point OPTKIT_CACHE at a writable folder"
        )
    return f"cannot write builtin:{name} to {root} ({reason}); set OPTKIT_CACHE to a writable folder"
