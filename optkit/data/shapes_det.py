"""The built-in synthetic detection set `builtin:shapes-det`: shapes on textured backgrounds, as YOLO files.

Each image holds 1-4 objects of six shape classes (circle, cross, ring, square, star, triangle: they stay
distinct under rotation and stretch), each with its own size (22-55 % of the image side), aspect ratio
(0.6-1.6), rotation and colour, over a background texture and clutter (thin lines and small blobs that are
not objects). Every 20th image is background only. Objects are drawn in order, later ones over earlier
ones; a placement that would hide more than 25 % of an earlier object is tried again elsewhere, so
occlusion stays partial. Each label is the object's full box, measured on the 4x canvas the object was
drawn on (tight to its pixels, not its nominal size). There is no pixel noise (unlike `builtin:shapes`):
it would make each PNG five times larger (~110 KB instead of ~22 KB at 256 px).

The drawing, textures and colours are those of `builtin:shapes` (optkit.data.shapes), and so is the
folder mechanism: every image is a pure function of (seed, split, index), so the output is byte-identical
whatever the number of processes; the folder is generated beside its target and renamed into place with
a `.complete` marker; the generation workers die with the process that builds the set. The layout is the
one YOLO trainers read:

    <root>/data.yaml                    train: images/train, val: images/val, nc, names (no `path`: the
                                        folders are relative to the yaml's own folder)
    <root>/images/{train,val}/000000.png
    <root>/labels/{train,val}/000000.txt  rows `class cx cy w h`, normalised, 6 decimals; empty: background
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from optkit.data import shapes
from optkit.errors import ConfigError

VERSION = 3  # bump whenever the pixels or labels change: the cache folder name and marker carry it
CLASSES = ("circle", "cross", "ring", "square", "star", "triangle")
SPLITS = shapes.SPLITS
IMGSZ = 256  # pixels, the side every image is generated at (the trainer resizes to its own --imgsz)
N_TRAIN = 3000
N_VAL = 300
SEED = 0

SUPERSAMPLE = shapes.SUPERSAMPLE  # objects are drawn at 4x, then box-averaged (anti-aliased edges)
MAX_OBJECTS = 4  # objects asked for per image: uniform in 1..MAX_OBJECTS (a few placements may fail)
SIZE_RANGE = (0.22, 0.55)  # object's circumscribed diameter, fraction of the image side
ASPECT_RANGE = (0.6, 1.6)  # width / height in the object's own frame, log-uniform (as many wide as tall)
MAX_HIDDEN = 0.25  # a new object may hide at most this fraction of any earlier object's area
PLACEMENT_TRIES = 20  # tries per object before it is left out
BACKGROUND_EVERY = 20  # image i holds no object when i % 20 == 19: 5 % of each split
MIN_OBJECT_DISTANCE = 60.0  # min RGB distance (0-255 scale) between two objects' colours: edges stay seen
CIRCLE_VERTICES = 96  # polygon of a circle: < 0.3 canvas pixels from the true curve at the largest size
CLUTTER_ITEMS = (1, 5)  # thin lines and small blobs per image, uniform in this range
LINE_LENGTH = (0.08, 0.35)  # clutter line length, fraction of the image side
LINE_WIDTH = (0.8, 2.0)  # clutter line width, pixels
BLOB_RADIUS = (1.5, 4.0)  # clutter blob radius, pixels (the smallest object is ~13 px across at 256 px)
CHUNK = 128  # images per job of the process pool
MARKER = shapes.MARKER


@dataclass(frozen=True)
class Scene:
    """What an image holds besides its objects. The builtin uses the defaults; tests turn parts off to
    look at the objects alone (a flat background makes every non-background pixel an object's)."""

    max_objects: int = MAX_OBJECTS
    texture: bool = True
    clutter: bool = True


@dataclass
class _Stamp:
    """One object or clutter item drawn at 4x and box-averaged: its coverage over an image patch."""

    alpha: np.ndarray  # float32 (h, w) in [0, 1], coverage of each output pixel of the patch
    x0: int  # patch origin in the image, pixels
    y0: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 of the drawn canvas pixels, output pixels


@dataclass
class _Placed:
    """An object in the image: its class, box, area and the part of it that later objects left visible."""

    cls: int
    stamp: _Stamp
    area: float  # sum of coverage, pixels
    visible: np.ndarray  # coverage times (1 - coverage of every later object), patch-shaped


# ---------------------------------------------------------------------------------------------- outlines


def _outline(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Polygons (N, 2) in the unit frame with their fill: 255 draws the shape, 0 cuts a hole (the ring)."""
    if name == "circle":
        return [(shapes._regular(CIRCLE_VERTICES), 255)]
    if name == "ring":
        outer = shapes._regular(CIRCLE_VERTICES)
        return [(outer, 255), (outer * rng.uniform(0.50, 0.65), 0)]
    if name == "square":  # axis-aligned, so a stretch makes a rectangle, not a rhombus
        return [(np.array([(1.0, 1.0), (1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0)]), 255)]
    if name == "triangle":
        return [(shapes._regular(3), 255)]
    if name == "star":
        return [(shapes._regular(5, (1.0, rng.uniform(0.38, 0.48))), 255)]
    return [(shapes._cross(rng.uniform(0.24, 0.34)), 255)]  # cross


def _place(
    polygons: list[tuple[np.ndarray, int]],
    center: tuple[float, float],
    radius: float,
    aspect: float,
    angle: float,
) -> list[tuple[np.ndarray, int]]:
    """Stretch the unit-frame polygons to `aspect` (width / height), rotate by `angle`, scale so the
    farthest point of the first polygon lies at `radius` pixels from `center`."""
    stretch = np.diag([math.sqrt(aspect), 1.0 / math.sqrt(aspect)])
    c, s = math.cos(angle), math.sin(angle)
    transform = stretch @ np.array([[c, s], [-s, c]])  # row vectors: stretch first, then rotate
    moved = [(points @ transform, fill) for points, fill in polygons]
    scale = radius / np.hypot(moved[0][0][:, 0], moved[0][0][:, 1]).max()
    return [(points * scale + center, fill) for points, fill in moved]


def _stamp(polygons: list[tuple[np.ndarray, int]], imgsz: int) -> _Stamp | None:
    """Draw `polygons` (image pixel coordinates) on a 4x canvas over their bounding patch (clipped to
    the image), box-average it to coverage. None when nothing of it lands on a canvas pixel."""
    points = np.concatenate([p for p, _ in polygons])
    x0, y0 = (max(0, math.floor(v) - 1) for v in points.min(axis=0))  # 1 px margin: nothing is clipped
    x1, y1 = (min(imgsz, math.ceil(v) + 1) for v in points.max(axis=0))
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for poly, fill in polygons:
        local = (poly - (x0, y0)) * SUPERSAMPLE
        draw.polygon([tuple(p) for p in local.tolist()], fill=fill)
    drawn = canvas.getbbox()  # (left, top, right, bottom) of non-zero canvas pixels, right/bottom exclusive
    if drawn is None:
        return None
    box = (
        x0 + drawn[0] / SUPERSAMPLE,
        y0 + drawn[1] / SUPERSAMPLE,
        x0 + drawn[2] / SUPERSAMPLE,
        y0 + drawn[3] / SUPERSAMPLE,
    )
    # Image.reduce: mean of each 4x4 block (rounded to 1/255); any drawn canvas pixel gives >= 16/255
    alpha = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0
    return _Stamp(alpha, x0, y0, box)


def _paint(img: np.ndarray, stamp: _Stamp, colour: np.ndarray) -> None:
    """Blend `colour` over `img` (float32 (H, W, 3)) by the stamp's coverage, in place."""
    h, w = stamp.alpha.shape
    a = stamp.alpha[..., None]
    patch = img[stamp.y0 : stamp.y0 + h, stamp.x0 : stamp.x0 + w]
    patch *= 1.0 - a
    patch += a * colour


# ---------------------------------------------------------------------------------------------- colours


def _object_colour(
    rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray, taken: list[np.ndarray]
) -> np.ndarray:
    """A colour at least MIN_CONTRAST from every background blend and MIN_OBJECT_DISTANCE from the other
    objects' colours; when 100 draws find none (a mid-grey background leaves little room), the draw that
    came closest to both bounds."""
    best, best_score = None, -1.0
    for _ in range(100):
        colour = rng.uniform(0, 255, 3)
        score = shapes._segment_distance(colour, c1, c2) / shapes.MIN_CONTRAST
        if taken:
            score = min(score, min(float(np.linalg.norm(colour - t)) for t in taken) / MIN_OBJECT_DISTANCE)
        if score >= 1.0:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


# ---------------------------------------------------------------------------------------------- scenes


def _try_object(imgsz: int, rng: np.random.Generator) -> tuple[int, _Stamp | None]:
    """One random object anywhere inside the image (1 px from the border): its class and stamp."""
    cls = int(rng.integers(len(CLASSES)))
    radius = rng.uniform(*SIZE_RANGE) * imgsz / 2
    aspect = math.exp(rng.uniform(math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
    angle = rng.uniform(0, 2 * math.pi)
    polygons = _outline(CLASSES[cls], rng)
    margin = radius + 1
    center = (rng.uniform(margin, imgsz - margin), rng.uniform(margin, imgsz - margin))
    return cls, _stamp(_place(polygons, center, radius, aspect, angle), imgsz)


def _overlap(a: _Stamp, b: _Stamp) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Index ranges of the patches' common pixels, in `a`'s and in `b`'s patch coordinates."""
    ah, aw = a.alpha.shape
    bh, bw = b.alpha.shape
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x0 + aw, b.x0 + bw), min(a.y0 + ah, b.y0 + bh)
    if x1 <= x0 or y1 <= y0:
        return None
    in_a = (slice(y0 - a.y0, y1 - a.y0), slice(x0 - a.x0, x1 - a.x0))
    in_b = (slice(y0 - b.y0, y1 - b.y0), slice(x0 - b.x0, x1 - b.x0))
    return in_a, in_b


def _hides_too_much(new: _Stamp, placed: list[_Placed]) -> bool:
    """True when drawing `new` on top would leave less than 60 % of some earlier object visible."""
    for obj in placed:
        common = _overlap(obj.stamp, new)
        if common is None:
            continue
        hidden = float((obj.visible[common[0]] * new.alpha[common[1]]).sum())
        if float(obj.visible.sum()) - hidden < (1.0 - MAX_HIDDEN) * obj.area:
            return True
    return False


def _cover(new: _Stamp, placed: list[_Placed]) -> None:
    """Record that `new` is drawn over the objects placed so far."""
    for obj in placed:
        common = _overlap(obj.stamp, new)
        if common is not None:
            obj.visible[common[0]] *= 1.0 - new.alpha[common[1]]


def _add_objects(
    img: np.ndarray, rng: np.random.Generator, count: int, c1: np.ndarray, c2: np.ndarray, first: np.ndarray
) -> list[_Placed]:
    """Draw up to `count` objects, each over the earlier ones, none hiding too much of another."""
    imgsz = img.shape[0]
    placed: list[_Placed] = []
    colours: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(PLACEMENT_TRIES):
            cls, stamp = _try_object(imgsz, rng)
            if stamp is not None and not _hides_too_much(stamp, placed):
                break
        else:
            continue  # no room for this one: the image holds fewer objects
        colour = _object_colour(rng, c1, c2, colours) if colours else first
        _cover(stamp, placed)
        _paint(img, stamp, colour)
        placed.append(_Placed(cls, stamp, float(stamp.alpha.sum()), stamp.alpha.copy()))
        colours.append(colour)
    return placed


def _clutter_item(imgsz: int, rng: np.random.Generator) -> _Stamp | None:
    """A thin line or a small blob, anywhere (it may run off the image)."""
    center = rng.uniform(0, imgsz, 2)
    if rng.random() < 0.5:
        half_length = rng.uniform(*LINE_LENGTH) * imgsz / 2
        half_width = rng.uniform(*LINE_WIDTH) / 2
        a = rng.uniform(0, math.pi)
        along = np.array([math.cos(a), math.sin(a)])
        across = np.array([-along[1], along[0]])
        signs = ((1, 1), (1, -1), (-1, -1), (-1, 1))  # around the rectangle
        corners = np.array([center + i * half_length * along + j * half_width * across for i, j in signs])
        return _stamp([(corners, 255)], imgsz)
    radius = rng.uniform(*BLOB_RADIUS)
    return _stamp([(shapes._regular(16) * radius + center, 255)], imgsz)


def _add_clutter(img: np.ndarray, rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray) -> None:
    for _ in range(rng.integers(CLUTTER_ITEMS[0], CLUTTER_ITEMS[1] + 1)):
        stamp = _clutter_item(img.shape[0], rng)
        colour = _object_colour(rng, c1, c2, [])
        if stamp is not None:
            _paint(img, stamp, colour)


def render_scene(
    imgsz: int, rng: np.random.Generator, scene: Scene = Scene(), background: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its labels: uint8 RGB (imgsz, imgsz, 3) and float64 [n, 5] rows
    (class, cx, cy, w, h) normalised to the image side; n = 0 when `background` (clutter only)."""
    first, c1, c2 = shapes._colours(rng)
    if scene.texture:
        img = c1 + shapes._texture(imgsz, rng)[..., None] * (c2 - c1)
    else:
        img = np.broadcast_to(c1, (imgsz, imgsz, 3))
    img = np.array(img, dtype=np.float32)  # a writable copy
    if scene.clutter:
        _add_clutter(img, rng, c1, c2)  # under the objects: a line may run behind one
    count = 0 if background else int(rng.integers(1, scene.max_objects + 1))
    placed = _add_objects(img, rng, count, c1, c2, first)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)  # +0.5: round, not truncate
    return image, _labels(placed, imgsz)


def _labels(placed: list[_Placed], imgsz: int) -> np.ndarray:
    rows = [
        (obj.cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        for obj in placed
        for x1, y1, x2, y2 in [obj.stamp.box]
    ]
    labels = np.array(rows, dtype=np.float64).reshape(-1, 5)
    labels[:, 1:] /= imgsz
    return labels


def is_background(index: int) -> bool:
    """Image `index` of a split holds no object (clutter and texture only)."""
    return index % BACKGROUND_EVERY == BACKGROUND_EVERY - 1


def label_text(labels: np.ndarray) -> str:
    """YOLO label file text: one `class cx cy w h` row per object, 6 decimals; '' for none."""
    return "".join(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in labels)


# ---------------------------------------------------------------------------------------------- folders


def _write_chunk(job: tuple[str, str, int, int, int, int, Scene]) -> None:
    """Write images [start, stop) of one split and their label files, image i seeded by (seed, split, i)."""
    folder, split, start, stop, imgsz, seed, scene = job
    split_id = SPLITS.index(split)
    for i in range(start, stop):
        shapes._exit_if_orphaned()
        rng = np.random.default_rng([seed, split_id, i])
        image, labels = render_scene(imgsz, rng, scene, background=is_background(i))
        Image.fromarray(image).save(Path(folder, "images", split, f"{i:06d}.png"), compress_level=1)
        Path(folder, "labels", split, f"{i:06d}.txt").write_text(label_text(labels))


def _jobs(folder: Path, sizes: dict[str, int], imgsz: int, seed: int, scene: Scene) -> list:
    return [
        (str(folder), split, start, min(start + CHUNK, n), imgsz, seed, scene)
        for split, n in sizes.items()
        for start in range(0, n, CHUNK)
    ]


def _write_images(
    folder: Path, sizes: dict[str, int], imgsz: int, seed: int, scene: Scene, workers: int | None
) -> None:
    for split in sizes:
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
    jobs = _jobs(folder, sizes, imgsz, seed, scene)
    if workers is None:  # all cores, unless the set is too small to pay for a pool
        small = sum(sizes.values()) < shapes.PARALLEL_MIN_IMAGES
        workers = 1 if small else shapes._cpu_count()
    if workers <= 1:
        for job in jobs:
            _write_chunk(job)
        return
    _run_in_pool(jobs, workers)


def _run_in_pool(jobs: list, procs: int) -> None:
    """shapes._run_in_pool over this module's chunks: workers set up by shapes._init_worker (they die
    with the builder), and killed at once by whatever stops the build."""
    pool = ProcessPoolExecutor(procs, initializer=shapes._init_worker, initargs=(os.getpid(),))
    try:
        for _ in pool.map(_write_chunk, jobs):
            pass
    except BaseException:
        shapes._kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def data_yaml() -> str:
    """The set's data.yaml. No `path` key: train and val are read relative to the yaml's folder."""
    import yaml

    spec = {"train": "images/train", "val": "images/val", "nc": len(CLASSES), "names": list(CLASSES)}
    header = "# builtin:shapes-det (optkit.data.shapes_det); folders are relative to this file\n"
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)


def params(imgsz: int, n_train: int, n_val: int, seed: int, scene: Scene = Scene()) -> dict:
    """What a finished folder's marker holds; a folder is reused only when it matches exactly."""
    return {
        "generator": "optkit.data.shapes_det",
        "version": VERSION,
        "imgsz": imgsz,
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "classes": list(CLASSES),
        "scene": asdict(scene),
    }


def _check_args(imgsz: int, n_train: int, n_val: int, scene: Scene) -> None:
    if imgsz < 32:
        raise ConfigError(f"builtin:shapes-det needs imgsz >= 32, got {imgsz}")
    if n_train < 1 or n_val < 1:
        raise ConfigError(
            f"builtin:shapes-det needs at least 1 train and 1 val image, got {n_train}, {n_val}"
        )
    if scene.max_objects < 1:
        raise ConfigError(f"builtin:shapes-det needs max_objects >= 1, got {scene.max_objects}")


def generate_shapes_det(
    root: Path,
    imgsz: int = IMGSZ,
    n_train: int = N_TRAIN,
    n_val: int = N_VAL,
    seed: int = SEED,
    *,
    scene: Scene = Scene(),
    workers: int | None = None,
) -> None:
    """Write the shapes-det YOLO folder to `root` (see the module docstring), replacing any old one.

    The same arguments give byte-identical files whatever `workers` is (None: all cores when the set
    has more than shapes.PARALLEL_MIN_IMAGES images, else this process alone).
    """
    _check_args(imgsz, n_train, n_val, scene)
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_images(tmp, {"train": n_train, "val": n_val}, imgsz, seed, scene, workers)
        (tmp / "data.yaml").write_text(data_yaml())
        marker = params(imgsz, n_train, n_val, seed, scene)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        shapes._replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
